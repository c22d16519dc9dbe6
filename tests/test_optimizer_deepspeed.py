"""optimizer.warmup_shape and optimizer.grad_accum_reduction against transcriptions of what upstream runs:
DeepSpeed's WarmupCosineLR (deepspeed/runtime/lr_schedules.py, deepspeedai/DeepSpeed edaa72212) stepped by the
engine after every update, and DeepSpeed's engine.backward with scale_wrt_gas=False under transformers'
Trainer.training_step (upstream tools/trainer_v4_51_3.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stage1
from omnidiff_jax import sharding
from omnidiff_jax.data import synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import optimizer as optlib
from omnidiff_jax.training import train_step


class WarmupCosineLR:
  """deepspeed/runtime/lr_schedules.py, WarmupCosineLR (__init__, get_lr_ratio, step, get_lr), one param group."""

  def __init__(self, lr, total_num_steps, warmup_min_ratio=0.0, warmup_num_steps=1000, cos_min_ratio=0.0001,
               warmup_type="log", last_batch_iteration=-1):
    self.total_num_steps = total_num_steps
    self.last_batch_iteration = last_batch_iteration
    self.cos_min_ratio = cos_min_ratio
    self.warmup_type = warmup_type
    self.warmup_min_ratio = warmup_min_ratio
    self.warmup_num_steps = max(2, warmup_num_steps)
    self.inverse_log_warm_up = 1.0 / math.log(self.warmup_num_steps)
    self.org_lr = lr
    self.lr = self.get_lr()

  def get_lr_ratio(self):
    if self.last_batch_iteration < 0:
      return 0.0
    if self.last_batch_iteration < self.warmup_num_steps:
      if self.warmup_type == "log":
        ratio = self.inverse_log_warm_up * math.log(self.last_batch_iteration + 1)
      elif self.warmup_type == "linear":
        ratio = self.last_batch_iteration / self.warmup_num_steps
      ratio_delta = 1. - self.warmup_min_ratio
      return self.warmup_min_ratio + ratio * ratio_delta
    real_last_step = self.last_batch_iteration - self.warmup_num_steps + 1
    real_total_steps = max(1, self.total_num_steps - self.warmup_num_steps)
    cosine_progress = min(1.0, real_last_step / real_total_steps)
    ratio_delta = 1. - self.cos_min_ratio
    ratio = (1 + math.cos(math.pi * cosine_progress)) / 2
    return max(0.0, self.cos_min_ratio + ratio_delta * ratio)

  def step(self):
    self.last_batch_iteration += 1
    self.lr = self.get_lr()

  def get_lr(self):
    return self.org_lr * self.get_lr_ratio() if self.last_batch_iteration >= 0 else 0.0


@pytest.mark.parametrize("shape", ["log", "linear"])
@pytest.mark.parametrize("warmup,total", [(720, 24000), (4, 30), (1, 10)])
def test_schedule_is_deepspeeds_warmup_cosine(shape, warmup, total):
  cfg = stage1.get_config("tiny").optimizer
  cfg.warmup_shape, cfg.warmup_steps, cfg.learning_rate = shape, warmup, 1e-5
  ours = optlib.learning_rate_schedule(cfg, total)
  # ds_config_zero2.json: warmup_min_ratio 0, cos_min_ratio 0.1 (= final_lr_ratio).
  ds = WarmupCosineLR(1e-5, total, warmup_min_ratio=0.0, warmup_num_steps=warmup, cos_min_ratio=0.1,
                      warmup_type=shape)
  counts = sorted(set(range(0, 40)) | set(range(0, total + 5, max(total // 97, 1))) | {total - 1, total})
  want = {}
  for n in range(max(counts) + 1):  # update n uses the rate set before it; the engine steps the scheduler after
    want[n] = ds.lr
    ds.step()
  got = np.asarray(jax.jit(jax.vmap(ours))(jnp.asarray(counts)))
  np.testing.assert_allclose(got, [want[n] for n in counts], rtol=2e-6, atol=1e-13)  # float32 vs float64


def test_stage_defaults_follow_upstream():
  cfg = stage1.get_config("tiny").optimizer
  assert (cfg.warmup_shape, cfg.grad_accum_reduction, cfg.final_lr_ratio) == ("log", "sum", 0.1)
  cfg.warmup_shape = "cubic"
  with pytest.raises(ValueError, match="optimizer.warmup_shape"):
    optlib.learning_rate_schedule(cfg, 10)
  cfg.grad_accum_reduction = "max"
  with pytest.raises(ValueError, match="optimizer.grad_accum_reduction"):
    optlib.check_grad_accum_reduction(cfg)


def _grad_norm(reduction: str, accum: int) -> float:
  cfg = stage1.get_config("tiny")
  cfg.train.seq_len, cfg.data.max_len, cfg.metrics.tensorboard = 48, 8, False
  cfg.train.grad_accum_steps, cfg.optimizer.grad_accum_reduction = accum, reduction
  # 4 rows per micro-batch over the 4 batch devices; fp32 compute: the reduction, not the precision, is under test.
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, 4, 2
  cfg.model.dtype = "float32"
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  state = trainer.init()
  before = jax.device_get(state)  # the step donates its input state
  batch = next(synthetic.make_source(cfg))
  _, metrics = trainer.step(state, batchlib.global_batch(mesh, batch, cfg.train.global_rows))
  return cfg, trainer, before, batch, float(metrics["grad_norm"])


def test_grad_accum_sum_is_deepspeeds_sum_of_micro_batch_means():
  """Upstream: Trainer.training_step does not divide the loss by gradient_accumulation_steps (Dream's forward takes
  **loss_kwargs) and calls engine.backward(loss, scale_wrt_gas=False): `gas_scaled_loss = loss` and .grad adds
  up each micro-batch's mean-loss gradient. Here: the norm of that sum, micro-batch a = rows a, A + a, ..."""
  cfg, trainer, state, batch, summed = _grad_norm("sum", 2)
  loss_fn = train_step.make_loss_fn(cfg, trainer.graphdef, jax.tree.map(lambda _: False, state["params"]))
  key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
  rows = batch["input_ids"].shape[0]
  grads = None
  for a in range(2):
    ids = np.arange(a, rows, 2, dtype=np.int32)
    micro = {k: jnp.asarray(np.asarray(v)[ids]) for k, v in batch.items()}

    def mean_loss(params, micro=micro, ids=ids):
      numerator, terms = loss_fn(params, micro, ids, key)
      return numerator / jnp.maximum(terms.denominator, 1.0)

    g = jax.grad(mean_loss)(state["params"])
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
  want = float(jnp.sqrt(sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(grads))))
  assert summed == pytest.approx(want, rel=1e-5)
  mean = _grad_norm("mean", 2)[-1]
  assert mean == pytest.approx(_grad_norm("mean", 1)[-1], rel=1e-5)  # 'mean': accumulation = the full batch
  # Every synthetic row has targets, so each micro-batch's denominator is half the batch's: sum = 2 x mean.
  assert summed == pytest.approx(2 * mean, rel=1e-5)
