"""Shared helpers of the bench scripts: timing, and the load guard every bench runs under.

bench/RESULTS.md records a figure only with the 1-minute load average at the start and the end of its run, and
never a figure taken while other jobs loaded the machine (the dev VM has 2 cores; other jobs on it distort the
ratios by up to 10x). The load average at the end also counts the bench's own threads, so a bench whose timed
part keeps both cores busy ends near load 2 on an idle VM. The guard therefore also measures what it is meant to
catch, the CPU that other processes (and the hypervisor's steal) used while the bench ran:

  others = (busy CPU seconds of the whole machine, /proc/stat) - (CPU seconds of this process and its children)

A figure is recordable when the load average at the start is at most MAX_LOAD and, over the run, either the end
load average is at most MAX_LOAD or the other processes used at most MAX_OTHER_CORES cores on average.
"""
import os
import resource
import sys
import time

MAX_LOAD = 1.5
MAX_OTHER_CORES = 0.25
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # /proc/stat cpu line: user nice system [idle iowait] irq softirq steal


def mean_seconds(fn, iters: int) -> float:
  """Calls fn once to warm up (compile), then returns the mean wall time of `iters` calls."""
  fn()
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - start) / iters


def machine_busy_seconds(stat_path: str = "/proc/stat") -> float:
  """CPU seconds all processes (and steal) have used since boot, summed over cores, from /proc/stat's cpu line."""
  with open(stat_path) as f:
    fields = f.readline().split()[1:]
  return sum(int(fields[i]) for i in _BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
  """User + system CPU seconds of this process and its waited-for children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def other_cores(busy_delta_s: float, own_delta_s: float, wall_s: float) -> float:
  """Mean number of cores other processes used over wall_s seconds (never below 0: tick rounding)."""
  return max(busy_delta_s - own_delta_s, 0.0) / max(wall_s, 1e-9)


def recordable(start_load: float, end_load: float, others: float) -> bool:
  """The rule in the module docstring."""
  return start_load <= MAX_LOAD and (end_load <= MAX_LOAD or others <= MAX_OTHER_CORES)


class LoadGuard:
  """Use as `with LoadGuard():` around a bench's main. Prints the 1-minute load average at the start and at the
  end and the cores other processes used meanwhile; when the figures are not recordable (see `recordable`) it
  says so and exits with status 3."""

  def __enter__(self):
    self.start = os.getloadavg()[0]
    self.wall, self.busy, self.own = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
    print(f"load average at start: {self.start:.2f} (figures are recordable up to {MAX_LOAD})")
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None and not (exc_type is SystemExit and exc.code in (0, None)):  # absl's app.run exits 0
      return False
    end = os.getloadavg()[0]
    wall = time.perf_counter() - self.wall
    own = own_cpu_seconds() - self.own
    others = other_cores(machine_busy_seconds() - self.busy, own, wall)
    print(f"load average at start / end: {self.start:.2f} / {end:.2f}; over the {wall:.0f} s run this process "
          f"used {own / wall:.2f} cores and other processes {others:.2f}")
    if not recordable(self.start, end, others):
      print(f"REFUSED: load average above {MAX_LOAD} at the start, or at the end with other processes using more "
            f"than {MAX_OTHER_CORES} cores: do not record these figures in bench/RESULTS.md", file=sys.stderr)
      sys.exit(3)
    return False
