"""Runs tools/<name>.py in a subprocess as a user does (absl flags parse once per process), with this worktree
on PYTHONPATH and JAX on the CPU."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_tool(name: str, *args, timeout: int = 600, **env) -> subprocess.CompletedProcess:
  """tools/<name>.py *args from the repository root; env: extra environment variables (XLA_FLAGS is '' unless
  given: tools fake CPU devices with --cpu_devices)."""
  environment = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="", **env)
  return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], capture_output=True,
                        text=True, env=environment, cwd=ROOT, timeout=timeout)
