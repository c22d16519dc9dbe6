"""bench/timing.py's load guard: the recordable rule and the other-processes CPU measure."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import timing  # noqa: E402


@pytest.mark.parametrize("start, end, others, expected", [
    (0.3, 1.2, 0.9, True),     # idle end load: recordable whatever the estimate says
    (0.3, 1.98, 0.05, True),   # the bench's own two threads took the end load to 1.98; nobody else ran
    (0.3, 1.98, 0.6, False),   # another job used 0.6 cores during the run
    (1.7, 1.0, 0.0, False),    # busy at the start
])
def test_recordable_rule(start, end, others, expected):
  assert timing.recordable(start, end, others) is expected


def test_other_cores_subtracts_own_cpu():
  assert timing.other_cores(busy_delta_s=30.0, own_delta_s=20.0, wall_s=10.0) == pytest.approx(1.0)
  assert timing.other_cores(busy_delta_s=19.99, own_delta_s=20.0, wall_s=10.0) == 0.0  # tick rounding


def test_machine_busy_seconds_reads_proc_stat(tmp_path):
  stat = tmp_path / "stat"
  stat.write_text("cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
  assert timing.machine_busy_seconds(str(stat)) == pytest.approx((100 + 20 + 30 + 5 + 6 + 7) / os.sysconf("SC_CLK_TCK"))

