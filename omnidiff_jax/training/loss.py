"""The masked-diffusion training objective (reference section 3.1).

Upstream (dataset_qwen2.forward_process, per sample, before packing) does:
  * targets are the assistant tokens plus the 1-16 tail `<|endoftext|>` pads (labels != -100);
  * per target token draw u1, u2 ~ U(0, 1), thr = (1 - eps) * u1 + eps; an ordinary target is masked iff
    u2 <= thr, a tail pad (label == eos) iff u2 <= gamma * thr (gamma = 0.6);
  * masked inputs become `<|mask|>`; only masked targets enter the loss;
  * HF ForCausalLMLoss: logit i predicts label i + 1 (Dream's shift), fp32 cross-entropy, mean over the
    masked targets of the micro-batch (one packed row per GPU), then DeepSpeed averages the rows.

Where the masking happens: here, inside the jitted step; row r of the global batch of step s draws its
uniforms from fold_in(fold_in(key, s), r). The draws therefore do not depend on the mesh, the number of
processes or the gradient-accumulation split, and the data pipeline stays a pure function of the sample index (clean ids + labels), which makes
exact resume and multi-host sharding easy; the per-token draws are i.i.d., so masking a packed row is
distributed exactly like masking each sample before packing.

Switches (config `loss`):
  * noise = 'per_token' (upstream code) | 'per_sequence' (paper Eq. 1: one t per packed segment);
  * inverse_t_weighting: weight each masked token by 1/t and normalise by the number of targets (the
    LLaDA-style ELBO); off by default (upstream has no weighting);
  * reduction = 'row_mean' (upstream: mean over rows of each row's mean over its masked targets; rows
    without any masked target are left out) | 'token_mean' (mean over all masked targets of the batch).

The loss is returned as a ratio `numerator / denominator` of sums so that gradient accumulation and
data parallelism reproduce the full-batch value exactly.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from omnidiff_jax.data.interfaces import IGNORE_ID  # label of non-targets (HF ignore_index)

Array = jax.Array


class Corruption(NamedTuple):
  """noisy_ids: (B, L) int32 inputs with masked targets replaced by the mask id; masked: (B, L) bool;
  t: (B, L) fp32 noise level thr of each position."""
  noisy_ids: Array
  masked: Array
  t: Array


class LossTerms(NamedTuple):
  """Sums over a (micro-)batch; the loss is numerator / denominator.

  task_sums, task_counts: (num_tasks,) masked-target CE sums and counts per task id (for logging).
  """
  numerator: Array
  denominator: Array
  masked_tokens: Array
  target_tokens: Array
  task_sums: Array
  task_counts: Array


def mask_from_uniforms(labels: Array, segment_ids: Array, u_level: Array, u_draw: Array, *, eos_id: int,
                       eps: float, pad_mask_ratio: float, per_sequence: bool) -> tuple[Array, Array]:
  """Which targets to mask, from given uniforms.

  labels, segment_ids: (B, L) int; u_level, u_draw: (B, L) fp32 in [0, 1). With per_sequence, every
  position of segment s uses u_level[:, s] (one t per packed sample). Returns masked (B, L) bool and
  t (B, L) fp32.
  """
  if per_sequence:
    u_level = jnp.take_along_axis(u_level, segment_ids, axis=1)
  t = (1.0 - eps) * u_level + eps
  threshold = jnp.where(labels == eos_id, pad_mask_ratio * t, t)
  masked = (labels != IGNORE_ID) & (u_draw <= threshold)
  return masked, t


def row_uniforms(key: Array, row_ids: Array, seq_len: int) -> tuple[Array, Array]:
  """Two (B, L) fp32 uniform arrays; row b uses fold_in(key, row_ids[b]) only."""
  def one_row(row_id):
    return jax.random.uniform(jax.random.fold_in(key, row_id), (2, seq_len), jnp.float32)
  u = jax.vmap(one_row)(row_ids)
  return u[:, 0], u[:, 1]


def corrupt(key: Array, batch: dict[str, Array], row_ids: Array, *, mask_id: int, eos_id: int,
            loss_cfg: ml_collections.ConfigDict) -> Corruption:
  """Draws the masks for a batch (fields 'input_ids', 'labels', 'segment_ids', all (B, L)).

  row_ids: (B,) int, the rows' indices in the global batch of the step (`key` is the step's key).
  """
  labels = batch["labels"]
  u_level, u_draw = row_uniforms(key, row_ids, labels.shape[1])
  masked, t = mask_from_uniforms(labels, batch["segment_ids"], u_level, u_draw, eos_id=eos_id,
                                 eps=loss_cfg.eps, pad_mask_ratio=loss_cfg.pad_mask_ratio,
                                 per_sequence=_per_sequence(loss_cfg))
  return Corruption(jnp.where(masked, mask_id, batch["input_ids"]).astype(jnp.int32), masked, t)


def _per_sequence(loss_cfg: ml_collections.ConfigDict) -> bool:
  if loss_cfg.noise not in ("per_token", "per_sequence"):
    raise ValueError(f"loss.noise must be 'per_token' or 'per_sequence', got {loss_cfg.noise!r}")
  return loss_cfg.noise == "per_sequence"


def diffusion_loss(logits: Array, labels: Array, masked: Array, t: Array, task_ids: Array, *, num_tasks: int,
                   loss_cfg: ml_collections.ConfigDict) -> LossTerms:
  """Shifted cross-entropy over the masked targets.

  logits: (B, L, V) unshifted (logit i predicts token i + 1), any float dtype, upcast to fp32;
  labels: (B, L) int (IGNORE_ID off-target); masked, t: from `mask_from_uniforms`; task_ids: (B, L) int.
  """
  logits = logits[:, :-1].astype(jnp.float32)
  labels, masked, t, task_ids = labels[:, 1:], masked[:, 1:], t[:, 1:], task_ids[:, 1:]
  targets = labels != IGNORE_ID
  picked = jnp.take_along_axis(logits, jnp.where(targets, labels, 0)[..., None], axis=-1)[..., 0]
  ce = jax.nn.logsumexp(logits, axis=-1) - picked  # (B, L - 1)
  mask_f = masked.astype(jnp.float32)
  weight = mask_f / t if loss_cfg.inverse_t_weighting else mask_f
  counted = targets.astype(jnp.float32) if loss_cfg.inverse_t_weighting else mask_f
  row_sum, row_count = jnp.sum(ce * weight, axis=1), jnp.sum(counted, axis=1)
  if loss_cfg.reduction == "row_mean":
    numerator = jnp.sum(row_sum / jnp.maximum(row_count, 1.0))
    denominator = jnp.sum(jnp.sum(mask_f, axis=1) > 0).astype(jnp.float32)
  elif loss_cfg.reduction == "token_mean":
    numerator, denominator = jnp.sum(row_sum), jnp.sum(row_count)
  else:
    raise ValueError(f"loss.reduction must be 'row_mean' or 'token_mean', got {loss_cfg.reduction!r}")
  task_onehot = jax.nn.one_hot(task_ids, num_tasks, dtype=jnp.float32) * mask_f[..., None]  # (B, L-1, T)
  return LossTerms(numerator=numerator, denominator=denominator, masked_tokens=jnp.sum(mask_f),
                   target_tokens=jnp.sum(targets.astype(jnp.float32)),
                   task_sums=jnp.einsum("bl,blt->t", ce, task_onehot), task_counts=jnp.sum(task_onehot, (0, 1)))
