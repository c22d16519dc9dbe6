"""Per-position logit processing, token choice and confidence, in upstream's order.

temperature -> top-p -> top-k -> repetition penalty -> position penalty -> softmax -> token -> confidence.
All arrays are float32; W is the number of scored positions (the active window), V the vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omnidiff_jax.platform import target_platform
from omnidiff_jax.sampling.schedule import SamplerConfig

Array = jax.Array
FILL = jnp.finfo(jnp.float32).min  # what upstream writes into filtered logits (not -inf)


def radix_bits() -> int:
  """Bits of the top-p cutoff's order key settled per pass over the logits: 4 on TPU and GPU, where one fused
  reduction sums the 15 thresholds' masses in a single read; 1 (a bisection) on CPU, where XLA materialises the
  15 masked copies instead (288 x the logits' bytes against 160 x for the bisection, HLO count)."""
  return 1 if target_platform() == "cpu" else 4


def _order_key(x: Array) -> Array:
  """float32 -> uint32 with the same order (NaN-free input; -0.0 below +0.0): negatives get all bits flipped,
  non-negatives the sign bit set."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def top_p_filter(logits: Array, top_p: float, bits: int | None = None) -> Array:
  """Keeps the smallest prefix of the sorted vocabulary whose mass exceeds top_p (the first always kept).

  Upstream sorts (ties in index order) and keeps sorted entry k while the mass of the entries before it is
  <= top_p. Without a sort (one of (W, V) dominates a CPU sampler step): the last kept value is the smallest
  logit x whose strictly-greater mass S(x) <= top_p, found exactly by a radix search over the float order
  (uint32 keys), since S falls as x grows: each pass settles the next `bits` bits of x's key from S at
  2^bits - 1 thresholds in one read of the keys and probabilities, so 32 / bits passes (bits = 1: a bisection);
  the result does not depend on `bits`. Of the entries tied at x, the first n in index order are kept,
  n = 1 + #{j >= 1: S(x) + j p(x) <= top_p} (bf16 logits tie often). Only rounding differs from upstream's
  cumsum (the masses are summed in another order).
  logits: (..., V) -> (..., V) with the removed entries set to FILL. bits: 1, 2, 4 or 8 (default radix_bits()).
  """
  bits = radix_bits() if bits is None else bits
  if 32 % bits:
    raise ValueError(f"top_p_filter: bits={bits} must divide 32")
  probs = jax.nn.softmax(logits, axis=-1)
  keys = _order_key(logits)

  def mass_above(key: Array) -> Array:  # key: (..., T) thresholds -> (..., T) mass of the entries above each
    return jnp.sum(jnp.where(keys[..., None, :] > key[..., :, None], probs[..., None, :], 0.0), axis=-1)

  def settle_digit(step, prefix):  # the answer is the smallest key whose mass above is <= top_p; it has `prefix`
    shift = (32 - bits * (step + 1)).astype(jnp.uint32)
    ends = prefix + (jnp.arange((1 << bits) - 1, dtype=jnp.uint32) << shift) + ((jnp.uint32(1) << shift) - 1)
    too_low = mass_above(ends) > top_p  # False from the answer's digit on (mass_above falls as the key grows)
    return prefix + (jnp.sum(too_low, axis=-1, keepdims=True, dtype=jnp.uint32) << shift)

  smallest_fitting = jax.lax.fori_loop(0, 32 // bits, settle_digit,
                                       jnp.zeros(logits.shape[:-1] + (1,), jnp.uint32))
  # No real logit has a key below the row's minimum: when all the mass fits, every entry is kept.
  cutoff_key = jnp.maximum(smallest_fitting, jnp.min(keys, axis=-1, keepdims=True))
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


def per_row_draw(draw, key: Array, shape: tuple[int, ...]) -> Array:
  """draw(key, shape) -> random (B, ...) array. key: () one stream for the whole batch, or (B,) one stream per
  row: row b is then draw(key[b], shape[1:]), the same values it gets alone in a batch of 1 with key[b] (for
  the batch-invariant eval, eval.generate), whatever its batch mates and batch size."""
  if key.ndim == 0:
    return draw(key, shape)
  return jax.vmap(lambda row_key: draw(row_key, shape[1:]))(key)


def choose_tokens(logits: Array, cfg: SamplerConfig, key: Array) -> tuple[Array, Array, Array]:
  """Token per position and its confidence. logits: processed (B, W, V); key: () or (B,) (see per_row_draw).

  Returns x0 (B, W) int32, prob (B, W) = p(x0), and confidence (B, W) for cfg.alg: p(x0) (maskgit_plus,
  origin), p_top1 - p_top2 (topk_margin) or sum p log(p + 1e-10) (entropy, entropy-penalty).
  """
  probs = jax.nn.softmax(logits, axis=-1)
  if cfg.temperature > 0:
    if key.ndim == 0:
      x0 = jax.random.categorical(key, logits, axis=-1)
    else:
      x0 = jax.vmap(lambda row_key, row_logits: jax.random.categorical(row_key, row_logits, axis=-1))(key, logits)
    x0 = x0.astype(jnp.int32)
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
