"""Test setup: 8 fake CPU devices (set before JAX starts) and shared fixtures."""
import os

from tool_cli import FAST_COMPILE_XLA_FLAGS

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Fast compiling (tool_cli.FAST_COMPILE_XLA_FLAGS: why, and what it changes); subprocess tools get it from run_tool.
for flag in FAST_COMPILE_XLA_FLAGS.split():
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
