"""MetricLogger: JSON lines every step; per-task losses, throughput, TFLOP/s and MFU in TensorBoard."""
import json

import jax.numpy as jnp
import numpy as np

from configs import stage1
from omnidiff_jax import flops
from omnidiff_jax.training import metrics as metricslib
from omnidiff_jax.training.batch import TASKS


def _step_metrics(loss, task_sums, task_counts):
  return dict(loss=jnp.float32(loss), grad_norm=jnp.float32(1.5), learning_rate=jnp.float32(1e-4),
              masked_tokens=jnp.float32(10), target_tokens=jnp.float32(20), nonfinite_streak=jnp.int32(0),
              skipped_steps=jnp.int32(0), task_loss_sums=jnp.asarray(task_sums, jnp.float32),
              task_counts=jnp.asarray(task_counts, jnp.float32))


def test_metric_logger_writes_jsonl_and_tensorboard(tmp_path, monkeypatch):
  cfg = stage1.get_config("tiny")
  cfg.train.steps, cfg.metrics.log_every, cfg.metrics.peak_tflops_per_device = 2, 2, 100.0
  clock = iter([0.0, 4.0])  # window start, then 4 s for the two steps
  monkeypatch.setattr(metricslib.time, "perf_counter", lambda: next(clock))
  logger = metricslib.MetricLogger(cfg, str(tmp_path), start_step=0)
  sums, counts = np.zeros(len(TASKS)), np.zeros(len(TASKS))
  sums[TASKS.index("t2i")], counts[TASKS.index("t2i")] = 6.0, 3.0
  logger.log(1, _step_metrics(2.5, sums, counts), "aa")
  sums[TASKS.index("text")], counts[TASKS.index("text")] = 1.0, 1.0
  logger.log(2, _step_metrics(2.0, sums, counts), "bb")
  logger.close()

  records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"], r["data_digest"]) for r in records] == [(1, 2.5, "aa"), (2, 2.0, "bb")]
  summary = logger.last_summary
  tokens = cfg.train.global_rows * cfg.train.seq_len
  assert summary["tokens_per_s"] == tokens / 2.0
  tflops = flops.flops_per_token(cfg.model, cfg.train.seq_len) * tokens / 2.0 / 8 / 1e12  # 8 fake devices
  np.testing.assert_allclose(summary["tflops_per_device"], tflops)
  np.testing.assert_allclose(summary["mfu"], tflops / 100.0)
  assert summary["loss/t2i"] == 12.0 / 6.0 and summary["loss/text"] == 1.0 and "loss/asr" not in summary
  events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").iterdir())
  for tag in ("loss/t2i", "tokens_per_s", "tflops_per_device", "mfu", "grad_norm", "learning_rate"):
    assert tag.encode() in events
