"""Ahead-of-time compiles of the tiny model's train step and samplers for real TPU topologies (libtpu, no TPU):
the Splash kernel is a Mosaic custom call, the matmul weights stay sharded, memory fits, and the cost walk
counts loop trip counts. Each topology compiles in its own process (tools/aot_compile.py): libtpu holds a
process lock, and this pytest process keeps JAX on the fake CPU devices."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install -e .[tpu] or .[test]); it describes "
                                       "TPU topologies for the compiler")


def _compile(tmp_path, topology: str) -> dict:
  out = tmp_path / "aot.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_SKIP_MDS_QUERY="1", PYTHONPATH=str(ROOT),
             # pytest-xdist may compile two topologies at once; the lock only guards real TPU devices.
             ALLOW_MULTIPLE_LIBTPU_LOAD="1")
  cmd = [sys.executable, str(ROOT / "tools" / "aot_compile.py"), "--config", "configs/stage1.py:tiny",
         f"--target=tpu:{topology}", "--config.model.attention_impl=splash", "--config.mesh.fsdp=-1",
         "--what=train,sample_exact,sample_kv", "--prompt_len=60", "--region_len=40", "--block_size=8",
         "--sample_steps=8", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return {r["what"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("topology, devices", [("v5e:2x2", 4), ("v5p:2x2x2", 8)])
def test_tiny_train_step_and_samplers_compile_for_tpu(tmp_path, topology, devices):
  results = _compile(tmp_path, topology)
  train = results["train_step"]
  assert train["mesh"] == {"data": 1, "fsdp": devices, "tensor": 1}
  assert (train["param_dtype"], train["dtype"], train["remat"]) == ("float32", "bfloat16", "full")
  for what in ("train_step", "sampler_exact", "sampler_kv_cache"):
    r = results[what]
    assert r["mosaic_kernels"] > 0, f"{what}: no tpu_custom_call (Splash ran as XLA ops or in the interpreter)"
    assert not r.get("replicated_state") and not r.get("replicated_params"), r
    assert r["memory_gib"]["total"] < r["memory_gib"]["usable_hbm"], r["verdict"]
    assert r["verdict"].startswith("fits")
  # The arguments the executable takes per device are the sharded state plus the batch shards, not a replica.
  assert train["memory_gib"]["arguments"] < 1.1 * train["state_gib_per_device"] + 1e-3
  # Layer scans (2 layers, forward and backward) are counted twice over; full remat adds a forward pass, so the
  # executed FLOPs exceed the model's (forward + backward) count.
  assert train["loop_trip_counts"] == [2, 2]
  assert train["hlo_flops"] > train["xla_cost_analysis"]["hlo_flops_loops_once"]
  assert train["hlo_flops"] > train["model_flops"]
  assert 0 < train["mfu_bound"] < 1
