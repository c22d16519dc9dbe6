"""Two local CPU processes (jax.distributed, gloo collectives), 2 devices each, train with the same global
batch as one process with 4 devices: the losses agree step by step."""
import subprocess

import numpy as np

import train_subprocess as ts

STEPS = 4


def test_two_processes_match_one_process(tmp_path):
  cache = tmp_path / "jax_cache"
  ts.run(tmp_path / "single", steps=STEPS, cpu_devices=4, cache_dir=cache)
  expected = [r["loss"] for r in ts.metrics(tmp_path / "single")]

  address = f"127.0.0.1:{ts.free_port()}"
  procs = [subprocess.Popen(
      ts.command(tmp_path / "multi", steps=STEPS, cpu_devices=2, extra=(
          f"--config.distributed.coordinator_address={address}", "--config.distributed.num_processes=2",
          f"--config.distributed.process_id={pid}")),
      env=ts.environment(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
  try:
    errors = [p.communicate(timeout=300)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-4000:]
  assert "process 1 of 2, 2 local / 4 global devices" in errors[1]
  records = ts.metrics(tmp_path / "multi")
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([r["loss"] for r in records], expected, rtol=1e-5)
  # Both processes wrote their data-iterator state into the shared checkpoint.
  data_files = sorted(p.name for p in (tmp_path / "multi" / "stage1" / "checkpoints" / str(STEPS) / "data").iterdir())
  assert len([f for f in data_files if "process" in f]) == 2, data_files
