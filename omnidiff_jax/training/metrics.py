"""Training metrics: per-step JSON lines, TensorBoard event files (tensorboardX) and a tqdm console line.

Every step: loss, grad_norm, learning_rate, skipped_steps, nonfinite_streak, masked/target tokens and a
digest of this process's batch (to audit resume: no batch repeated or skipped) go to <workdir>/metrics.jsonl.
Every `metrics.log_every` steps: the same plus per-task losses (mean CE over the window's masked targets
of each task), tokens/s, TFLOP/s per device and MFU (omnidiff_jax.flops: full bidirectional attention)
go to TensorBoard and the console. Only process 0 writes.
"""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from omnidiff_jax import flops
from omnidiff_jax.training.batch import TASKS

# Dense bf16 peak TFLOP/s per device, by substring of jax's device_kind (Levanter/MaxText tables).
PEAK_TFLOPS = (("v6", 918.0), ("v5p", 459.0), ("v5", 197.0), ("v4", 275.0), ("H200", 989.0), ("H100", 989.0),
               ("A100", 312.0))


def peak_tflops_per_device(configured: float) -> float | None:
  if configured:
    return configured
  kind = jax.devices()[0].device_kind
  return next((peak for key, peak in PEAK_TFLOPS if key in kind), None)


class MetricLogger:
  """Collects the step metrics (device arrays, fetched one step late so the host never stalls the device)."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, *, start_step: int):
    self.cfg, self.enabled = cfg, jax.process_index() == 0
    tokens = cfg.train.global_rows * cfg.train.seq_len
    self.flops_per_step = flops.flops_per_token(cfg.model, cfg.train.seq_len) * tokens
    self.tokens_per_step, self.peak = tokens, peak_tflops_per_device(cfg.metrics.peak_tflops_per_device)
    self._window_start, self._window_steps = time.perf_counter(), 0
    self._task_sums, self._task_counts = np.zeros(len(TASKS)), np.zeros(len(TASKS))
    self.last: dict[str, float] = {}  # scalars of the newest step
    self.last_summary: dict[str, float] = {}  # the newest logging window's summary
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._writer = None
    if cfg.metrics.tensorboard:
      from tensorboardX import SummaryWriter
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._bar = tqdm(total=cfg.train.steps, initial=start_step, desc=f"train {cfg.stage}", dynamic_ncols=True)

  def log(self, step: int, metrics: dict, data_digest: str) -> dict[str, float]:
    """Records the metrics of the step that produced state `step`; returns the scalars."""
    host = jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), metrics))  # replicated outputs
    scalars = {k: float(v) for k, v in host.items() if np.ndim(v) == 0}
    self._task_sums += host["task_loss_sums"]
    self._task_counts += host["task_counts"]
    self._window_steps += 1
    self.last = scalars
    if not self.enabled:
      return scalars
    self._jsonl.write(json.dumps(dict(step=step, data_digest=data_digest, **scalars)) + "\n")
    self._jsonl.flush()
    self._bar.update(1)
    if step % self.cfg.metrics.log_every == 0 or step == self.cfg.train.steps:
      self._flush_window(step, scalars)
    return scalars

  def log_eval(self, step: int, scalars: dict[str, float]) -> None:
    """Eval metrics of the model at `step` (names like 'eval/mme/default/perception') to metrics.jsonl and
    TensorBoard."""
    if not self.enabled or not scalars:
      return
    self._jsonl.write(json.dumps(dict(step=step, **{k: float(v) for k, v in scalars.items()})) + "\n")
    self._jsonl.flush()
    if self._writer is not None:
      for k, v in scalars.items():
        self._writer.add_scalar(k, float(v), step)
      self._writer.flush()

  def _flush_window(self, step: int, scalars: dict[str, float]) -> None:
    now = time.perf_counter()
    seconds_per_step = (now - self._window_start) / self._window_steps
    summary = dict(scalars, tokens_per_s=self.tokens_per_step / seconds_per_step,
                   tflops_per_device=self.flops_per_step / seconds_per_step / jax.device_count() / 1e12)
    if self.peak:
      summary["mfu"] = summary["tflops_per_device"] / self.peak
    for task, s, c in zip(TASKS, self._task_sums, self._task_counts):
      if c:
        summary[f"loss/{task}"] = s / c
    self.last_summary = summary
    if self._writer is not None:
      for k, v in summary.items():
        self._writer.add_scalar(k, v, step)
      self._writer.flush()
    self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}",
                          tok_s=f"{summary['tokens_per_s']:,.0f}", skipped=int(scalars["skipped_steps"]))
    self._window_start, self._window_steps = now, 0
    self._task_sums[:], self._task_counts[:] = 0, 0

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._bar.close()
      if self._writer is not None:
        self._writer.close()
