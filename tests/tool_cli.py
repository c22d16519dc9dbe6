"""Runs tools/<name>.py in a subprocess as a user does (absl flags parse once per process), with this worktree
on PYTHONPATH and JAX on the CPU."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Compiling dominates the tiny models' tests: LLVM without its expensive passes cuts their CPU time by about a
# third. Results move by rounding only (XLA's CPU fast-math stays off): the tiny model's f32 logits differ by at
# most 4.2e-7 from an optimised build, below every bound. tests/conftest.py sets them for the test processes too.
FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_tool(name: str, *args, timeout: int = 600, **env) -> subprocess.CompletedProcess:
  """tools/<name>.py *args from the repository root; env: extra environment variables (XLA_FLAGS is
  FAST_COMPILE_XLA_FLAGS unless given: tools fake CPU devices with --cpu_devices)."""
  environment = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE_XLA_FLAGS)
  environment.update(env)
  return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], capture_output=True,
                        text=True, env=environment, cwd=ROOT, timeout=timeout)
