"""Helpers for tests that run tools/train.py in subprocesses (tiny stage-1 config, short rows), and the
subprocess environment and coordinator port that the multi-process tests (train, eval) share."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

from tool_cli import FAST_COMPILE_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_OVERRIDES = ("--config.train.steps={steps}", "--config.checkpoint.save_every=3", "--config.metrics.log_every=2",
                  "--config.train.seq_len=48", "--config.data.max_len=8", "--config.metrics.tensorboard=False")


def command(workdir, *, steps, cpu_devices=4, stage="stage1", extra=()):
  return [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(ROOT / "configs" / stage) + ".py:tiny",
          f"--workdir={workdir}", f"--cpu_devices={cpu_devices}",
          *(o.format(steps=steps) for o in TINY_OVERRIDES), *extra]


def free_port() -> int:
  """A free localhost TCP port (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(cache_dir=None):
  """Subprocess env; runs that share `cache_dir` compile the train step once (JAX persistent cache)."""
  # The tool appends the device count; fast compiling halves the compile time of these tiny runs.
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE_XLA_FLAGS)
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def run(workdir, *, steps, timeout=240, cache_dir=None, **kw):
  proc = subprocess.run(command(workdir, steps=steps, **kw), env=environment(cache_dir), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def start(workdir, *, steps, cache_dir=None, **kw):
  return subprocess.Popen(command(workdir, steps=steps, **kw), env=environment(cache_dir), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def metrics(workdir, stage="stage1"):
  """Per-step metric records of metrics.jsonl, in file order (a line cut by kill -9 is skipped)."""
  path = pathlib.Path(workdir) / stage / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      pass
  return out


def wait_for_step(proc, workdir, step, timeout=240):
  """Blocks until metrics.jsonl has a record for `step` (the process must still be running)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(r["step"] >= step for r in metrics(workdir)):
      return
    if proc.poll() is not None:
      raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-4000:]}")
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"step {step} not reached in {timeout}s")


def checkpoint_steps(workdir, stage="stage1"):
  d = pathlib.Path(workdir) / stage / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())
