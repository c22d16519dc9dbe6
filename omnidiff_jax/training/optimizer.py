"""Optimizer (config section `optimizer`), as upstream's DeepSpeed setup (reference section 3.3):

  apply_if_finite(                         NaN/Inf guard: skip the update, count it (notfinite_count);
                                           never applies a non-finite update: the training loop stops
                                           after optimizer.max_nonfinite_steps skipped steps in a row
    multi_transform(
      trained: clip_by_global_norm(1.0) -> AdamW(b1 0.9, b2 0.95, eps 1e-8, weight decay 0)
               with DeepSpeed's WarmupCosineLR: log or linear warmup, cosine to final_lr_ratio (0.1) x peak,
      frozen:  set_to_zero  (parameters whose path matches a `frozen` regex; no optimizer state)))

Parameter paths are '/'-joined state keys, e.g. 'embed_tokens/embedding', 'layers/mlp/up_proj/kernel'.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

NEVER_APPLY_NONFINITE = 2**30  # apply_if_finite applies updates after this many non-finite steps in a row


def param_path(key_path) -> str:
  """'layers/mlp/up_proj/kernel' for a jax key path into an nnx.State of parameters."""
  parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path]
  return "/".join(p for p in parts if p != "value")


def frozen_mask(params, patterns) -> object:
  """Pytree of bools (same structure as params): True where the path matches one of the regexes."""
  compiled = [re.compile(p) for p in patterns]
  mask = jax.tree_util.tree_map_with_path(
      lambda kp, _: any(c.search(param_path(kp)) for c in compiled), params)
  bad = [p for p, c in zip(patterns, compiled)
         if not any(c.search(param_path(kp)) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0])]
  if bad:
    raise ValueError(f"optimizer.frozen patterns {bad} match no parameter")
  return mask


WARMUP_SHAPES = ("linear", "log")
GRAD_ACCUM_REDUCTIONS = ("mean", "sum")


def learning_rate_schedule(opt_cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """DeepSpeed's WarmupCosineLR, the scheduler of upstream's scripts/deepspeed/ds_config_zero2.json
  (warmup_min_ratio 0, cos_min_ratio = final_lr_ratio 0.1; finetune.sh: 24000 steps, warm-up 3 %), as in
  deepspeed/runtime/lr_schedules.py (WarmupCosineLR.get_lr_ratio), as a function of the update count n.

  DeepSpeed steps the scheduler after each update, starting from last_batch_iteration -1 (learning rate 0), so
  update n uses ratio(k = n - 1). With W = max(2, warmup_steps) and T = total_steps, for k < W: log(k + 1) /
  log(W) (warmup_shape 'log', DeepSpeed's default warmup_type, which the config does not override) or k / W
  ('linear'); after: cos_min + (1 - cos_min) (1 + cos(pi min(1, (k - W + 1) / max(1, T - W)))) / 2.
  """
  if opt_cfg.warmup_shape not in WARMUP_SHAPES:
    raise ValueError(f"optimizer.warmup_shape must be one of {WARMUP_SHAPES}, got {opt_cfg.warmup_shape!r}")
  peak, cos_min = opt_cfg.learning_rate, opt_cfg.final_lr_ratio
  warmup = max(2, opt_cfg.warmup_steps)

  def schedule(count):
    k = jnp.asarray(count, jnp.float32) - 1.0
    if opt_cfg.warmup_shape == "log":
      warm = jnp.log(jnp.maximum(k, 0.0) + 1.0) / jnp.log(jnp.float32(warmup))
    else:
      warm = k / warmup
    progress = jnp.minimum(1.0, (k - warmup + 1.0) / max(1, total_steps - warmup))
    cosine = jnp.maximum(0.0, cos_min + (1.0 - cos_min) * (1.0 + jnp.cos(jnp.pi * progress)) / 2.0)
    ratio = jnp.where(k < 0, 0.0, jnp.where(k < warmup, warm, cosine))
    return peak * ratio

  return schedule


def check_grad_accum_reduction(opt_cfg: ml_collections.ConfigDict) -> str:
  """optimizer.grad_accum_reduction: how train_step combines its micro-batches' gradients.

  'mean': the gradient of the whole batch's loss (sum of numerators / sum of denominators; accumulation equals
  the full-batch step). 'sum': the sum of each micro-batch's own mean-loss gradient, which is what upstream does:
  Dream's forward takes **loss_kwargs, so transformers' Trainer neither divides the micro-batch loss by
  gradient_accumulation_steps nor lets DeepSpeed do it (scale_wrt_gas=False; tools/trainer_v4_51_3.py,
  training_step; deepspeed/runtime/engine.py, backward), and Dream's forward drops num_items_in_batch
  (omni_diffusion/models/dream/modeling_dream.py, DreamModel.forward). Clipping then sees the summed gradient.
  A micro-batch here spans all devices; DeepSpeed averages the ranks' micro-batch gradients, which is the same
  with loss.reduction 'row_mean' and equal rows per rank (upstream: 1 packed row per GPU per micro-step).
  """
  if opt_cfg.grad_accum_reduction not in GRAD_ACCUM_REDUCTIONS:
    raise ValueError(f"optimizer.grad_accum_reduction must be one of {GRAD_ACCUM_REDUCTIONS}, "
                     f"got {opt_cfg.grad_accum_reduction!r}")
  return opt_cfg.grad_accum_reduction


def make_optimizer(opt_cfg: ml_collections.ConfigDict, params, total_steps: int) -> optax.GradientTransformation:
  """The full transformation for `params` (an nnx.State or abstract pytree of them)."""
  adamw = optax.chain(
      optax.clip_by_global_norm(opt_cfg.grad_clip_norm),
      optax.adamw(learning_rate_schedule(opt_cfg, total_steps), b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                  weight_decay=opt_cfg.weight_decay))
  labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(params, opt_cfg.frozen))
  tx = optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()}, labels)
  return optax.apply_if_finite(tx, max_consecutive_errors=NEVER_APPLY_NONFINITE)
