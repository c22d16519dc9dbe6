"""Test setup: 8 fake CPU devices (set before JAX starts) and shared fixtures."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Compiling dominates the tiny models' tests: LLVM without its expensive passes cuts the suite's CPU time by about
# a third (tests/test_train_step.py: 140 -> 92 CPU s). Results move by rounding only (XLA's CPU fast-math stays
# off): the tiny model's f32 logits differ by at most 4.2e-7 from an optimised build, below every bound.
# Subprocess tests inherit the flags.
for flag in ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"):
  if flag.split("=")[0] not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + flag
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # makes `configs` importable


@pytest.fixture
def tiny_config():
  from configs import tiny
  return tiny.get_config()
