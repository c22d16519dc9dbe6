"""Shared helpers of the bench scripts: timing, and the load-average guard every bench runs under.

bench/RESULTS.md records a figure only with the 1-minute load average at the start and the end of its run, and
never a figure taken above MAX_LOAD (the dev VM has 2 cores; other jobs on it distort the ratios by up to 10x).
"""
import os
import sys
import time

MAX_LOAD = 1.5


def mean_seconds(fn, iters: int) -> float:
  """Calls fn once to warm up (compile), then returns the mean wall time of `iters` calls."""
  fn()
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


class LoadGuard:
  """Use as `with LoadGuard():` around a bench's main. Prints the 1-minute load average at the start and at the
  end; if either exceeds MAX_LOAD it says the figures must not be recorded and exits with status 3."""

  def __enter__(self):
    self.start = os.getloadavg()[0]
    print(f"load average at start: {self.start:.2f} (figures are recordable up to {MAX_LOAD})")
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None and not (exc_type is SystemExit and exc.code in (0, None)):  # absl's app.run exits 0
      return False
    end = os.getloadavg()[0]
    print(f"load average at start / end: {self.start:.2f} / {end:.2f}")
    if max(self.start, end) > MAX_LOAD:
      print(f"REFUSED: load average above {MAX_LOAD}: do not record these figures in bench/RESULTS.md",
            file=sys.stderr)
      sys.exit(3)
    return False
