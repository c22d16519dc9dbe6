"""Shared timing helper of the bench scripts."""
import time


def mean_seconds(fn, iters: int) -> float:
  """Calls fn once to warm up (compile), then returns the mean wall time of `iters` calls."""
  fn()
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters
