"""Per-position logit processing, token choice and confidence, in upstream's order.

temperature -> top-p -> top-k -> repetition penalty -> position penalty -> softmax -> token -> confidence.
All arrays are float32; W is the number of scored positions (the active window), V the vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omnidiff_jax.sampling.schedule import SamplerConfig

Array = jax.Array
FILL = jnp.finfo(jnp.float32).min  # what upstream writes into filtered logits (not -inf)


def _order_key(x: Array) -> Array:
  """float32 -> int32 with the same order (NaN-free input): flips the magnitude bits of negative floats."""
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def top_p_filter(logits: Array, top_p: float) -> Array:
  """Keeps the smallest prefix of the sorted vocabulary whose mass exceeds top_p (the first always kept).

  Upstream sorts (ties in index order) and keeps sorted entry k while the mass of the entries before it is
  <= top_p. Without a sort (one of (W, V) dominates a CPU sampler step): the last kept value is the smallest
  logit x whose strictly-greater mass S(x) <= top_p, found exactly by a 32-step bisection over the float
  order (int32 keys), since S falls as x grows. Of the entries tied at x, the first n in index order are kept,
  n = 1 + #{j >= 1: S(x) + j p(x) <= top_p} (bf16 logits tie often). Only rounding differs from upstream's
  cumsum (the masses are summed in another order).
  logits: (..., V) -> (..., V) with the removed entries set to FILL.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  keys = _order_key(logits)

  def mass_above(key: Array) -> Array:
    return jnp.sum(jnp.where(keys > key, probs, 0.0), axis=-1, keepdims=True)

  def halve(_, bounds):  # invariant: the answer is in [lo, hi] and S(hi) <= top_p
    lo, hi = bounds
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without int32 overflow
    fits = mass_above(mid) <= top_p
    return jnp.where(fits, lo, mid + 1), jnp.where(fits, mid, hi)

  bounds = (jnp.min(keys, axis=-1, keepdims=True), jnp.max(keys, axis=-1, keepdims=True))
  _, smallest_fitting = jax.lax.fori_loop(0, 32, halve, bounds)
  cutoff_key = jnp.min(jnp.where(keys >= smallest_fitting, keys, jnp.iinfo(jnp.int32).max), axis=-1,
                       keepdims=True)
  tied = keys == cutoff_key
  tie_prob = jnp.max(jnp.where(tied, probs, 0.0), axis=-1, keepdims=True)
  num_tied = jnp.sum(tied, axis=-1, keepdims=True)
  headroom = (top_p - mass_above(cutoff_key)) / jnp.maximum(tie_prob, jnp.finfo(jnp.float32).tiny)
  num_tied_kept = jnp.clip(jnp.floor(headroom).astype(jnp.int32) + 1, 1, num_tied)
  tie_rank = jax.lax.cond(jnp.any(num_tied_kept < num_tied), lambda: jnp.cumsum(tied, axis=-1) - 1,
                          lambda: jnp.zeros(tied.shape, jnp.int32))
  keep = (keys > cutoff_key) | (tied & (tie_rank < num_tied_kept))
  return jnp.where(keep, logits, FILL)


def top_k_filter(logits: Array, top_k: int) -> Array:
  """Removes every logit below the k-th largest. logits: (..., V)."""
  kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
  return jnp.where(logits < kth, FILL, logits)


def ctrl_penalty(logits: Array, factor: Array | float) -> Array:
  """Pushes logits toward 'unlikely': negatives times factor, non-negatives divided by it (factor >= 1).

  The division is correctly rounded, as upstream's torch division: XLA rewrites a division by a constant or by
  a broadcast into a multiplication by the reciprocal (1 ulp off for ~1 in 4 logits); a full-shape divisor
  behind an optimization barrier keeps it a true division. logits: (..., V); factor: broadcastable to it.
  """
  divisor = jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(factor, logits.dtype), logits.shape))
  return jnp.where(logits < 0, logits * factor, logits / divisor)


def decoded_ids_present(region: Array, vocab_size: int, mask_id: int, exclude_zero: bool) -> Array:
  """Which ids are already decoded in each row. region: (B, G) int -> (B, V) bool.

  Upstream fills the prompt region of its canvas with id 0 and then ignores id 0 (exclude_zero reproduces
  that); the mask id is never counted.
  """
  decoded = region != mask_id
  if exclude_zero:
    decoded &= region != 0
  rows = jnp.broadcast_to(jnp.arange(region.shape[0])[:, None], region.shape)
  return jnp.zeros((region.shape[0], vocab_size), bool).at[rows, region].max(decoded)


def position_penalty_table(region_len: int, max_penalty: float, window: int) -> np.ndarray:
  """Upstream's position-penalty ramp for every masked count N and masked-order index j (host side).

  table[N, j] = 1 + (j - window) / (N - window) * (P - 1) for N > window and j >= window, else 1; computed in
  float64 and cast to float32 as upstream does (XLA's float32 division is not always correctly rounded, which
  would flip near-tied confidences). Returns (G + 1, G) float32.
  """
  n = np.arange(region_len + 1, dtype=np.float64)[:, None]
  j = np.arange(region_len, dtype=np.float64)[None, :]
  with np.errstate(divide="ignore", invalid="ignore"):
    ramp = (j - window) / (n - window) * (max_penalty - 1.0) + 1.0
  return np.where((n > window) & (j >= window), ramp, 1.0).astype(np.float32)


def position_penalty_factors(masked: Array, table: Array) -> Array:
  """Per-position factors over the masked positions of each row, taken in sequence order.

  masked: (B, G) bool; table: (G + 1, G) from position_penalty_table. Returns (B, G) float32 (entries at
  unmasked positions are unused).
  """
  j = jnp.maximum(jnp.cumsum(masked, axis=1) - 1, 0)
  n = jnp.sum(masked, axis=1)
  return table[n[:, None], j]


def process_logits(logits: Array, cfg: SamplerConfig, repeated: Array | None, position_factor: Array | None
                   ) -> Array:
  """logits: (B, W, V); repeated: (B, V) bool ids to penalise or None; position_factor: (B, W) or None."""
  logits = logits.astype(jnp.float32)
  if cfg.temperature > 0:
    logits = logits / cfg.temperature
  if cfg.top_p is not None and cfg.top_p < 1:
    logits = top_p_filter(logits, cfg.top_p)
  if cfg.top_k is not None:
    logits = top_k_filter(logits, cfg.top_k)
  if repeated is not None:
    logits = jnp.where(repeated[:, None, :], ctrl_penalty(logits, cfg.repetition_penalty), logits)
  if position_factor is not None:
    logits = ctrl_penalty(logits, position_factor[..., None])
  return logits


def choose_tokens(logits: Array, cfg: SamplerConfig, key: Array) -> tuple[Array, Array, Array]:
  """Token per position and its confidence. logits: processed (B, W, V).

  Returns x0 (B, W) int32, prob (B, W) = p(x0), and confidence (B, W) for cfg.alg: p(x0) (maskgit_plus,
  origin), p_top1 - p_top2 (topk_margin) or sum p log(p + 1e-10) (entropy, entropy-penalty).
  """
  probs = jax.nn.softmax(logits, axis=-1)
  if cfg.temperature > 0:
    x0 = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
  else:
    x0 = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  prob = jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
  if cfg.alg == "topk_margin":
    top2 = jax.lax.top_k(probs, 2)[0]
    confidence = top2[..., 0] - top2[..., 1]
  elif cfg.alg in ("entropy", "entropy-penalty"):
    confidence = jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1)
  else:
    confidence = prob
  return x0, prob, confidence
