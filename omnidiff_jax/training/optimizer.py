"""Optimizer (config section `optimizer`), as upstream's DeepSpeed setup (reference section 3.3):

  apply_if_finite(                         NaN/Inf guard: skip the update, count it (notfinite_count);
                                           never applies a non-finite update: the training loop stops
                                           after optimizer.max_nonfinite_steps skipped steps in a row
    multi_transform(
      trained: clip_by_global_norm(1.0) -> AdamW(b1 0.9, b2 0.95, eps 1e-8, weight decay 0)
               with linear warmup then cosine decay to final_lr_ratio (0.1) x peak,
      frozen:  set_to_zero  (parameters whose path matches a `frozen` regex; no optimizer state)))

Parameter paths are '/'-joined state keys, e.g. 'embed_tokens/embedding', 'layers/mlp/up_proj/kernel'.
"""
from __future__ import annotations

import re

import jax
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


def learning_rate_schedule(opt_cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to opt_cfg.learning_rate, then cosine to final_lr_ratio x peak at total_steps."""
  peak = opt_cfg.learning_rate
  warmup = min(opt_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                            end_value=peak * opt_cfg.final_lr_ratio)


def make_optimizer(opt_cfg: ml_collections.ConfigDict, params, total_steps: int) -> optax.GradientTransformation:
  """The full transformation for `params` (an nnx.State or abstract pytree of them)."""
  adamw = optax.chain(
      optax.clip_by_global_norm(opt_cfg.grad_clip_norm),
      optax.adamw(learning_rate_schedule(opt_cfg, total_steps), b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                  weight_decay=opt_cfg.weight_decay))
  labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(params, opt_cfg.frozen))
  tx = optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()}, labels)
  return optax.apply_if_finite(tx, max_consecutive_errors=NEVER_APPLY_NONFINITE)
