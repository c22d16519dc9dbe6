"""Speech-input adapter: the ResamplerProjector and the splice of projected features into input embeddings.

Projector (upstream `ResamplerProjector(512, hidden)`): LayerNorm(in, eps 1e-5) -> Linear(in -> hidden, no
bias) -> exact GELU -> Linear(hidden -> hidden, no bias); linears initialised N(0, 0.02). One LLM position per
encoder frame (no downsampling).

Splice (upstream `DreamBaseModel.forward`): the first `length` projected rows of each clip overwrite the
input embeddings at that clip's `<|context_of_audio|>` slots. Here the slots are given as a (B, L) map of
source rows: `source[b, l] = n * T + t` puts frame t of clip n at position (b, l); -1 keeps the token
embedding. `audio_source_rows` builds that map from per-clip slot positions.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

Array = jax.Array


class AudioProjector(nnx.Module):
  """features (..., in) -> (..., hidden) in cfg.dtype."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = nnx.initializers.normal(0.02)
    self.pre_proj_layernorm = nnx.LayerNorm(cfg.input_size, epsilon=1e-5, dtype=dt, param_dtype=pdt, rngs=rngs)
    self.linear_1 = nnx.Linear(cfg.input_size, cfg.hidden_size, use_bias=False, kernel_init=init, dtype=dt,
                               param_dtype=pdt, rngs=rngs)
    self.linear_2 = nnx.Linear(cfg.hidden_size, cfg.hidden_size, use_bias=False, kernel_init=init, dtype=dt,
                               param_dtype=pdt, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.linear_2(jax.nn.gelu(self.linear_1(self.pre_proj_layernorm(x)), approximate=False))


def splice_audio_features(embeds: Array, features: Array, source_rows: Array) -> Array:
  """Overwrites audio-slot embeddings with projected speech features.

  embeds: (B, L, D) token embeddings; features: (N, T, D) projected clips; source_rows: (B, L) int, the row
  n * T + t of `features.reshape(N * T, D)` for an audio slot, -1 elsewhere. Returns (B, L, D), embeds' dtype.
  """
  flat = features.reshape(-1, features.shape[-1]).astype(embeds.dtype)
  gathered = jnp.take(flat, jnp.maximum(source_rows, 0), axis=0)
  return jnp.where((source_rows >= 0)[..., None], gathered, embeds)


def audio_source_rows(slots: Sequence[tuple[int, Sequence[int]]], lengths: Sequence[int], shape: tuple[int, int],
                      frames_per_clip: int) -> np.ndarray:
  """Builds the (B, L) source map for `splice_audio_features` (host side, NumPy).

  slots: per clip n, (batch row, the sequence positions of its audio slots); clip n fills its slots with its
  first lengths[n] frames, so len(positions) must equal lengths[n] (<= frames_per_clip = T).
  """
  if len(slots) != len(lengths):
    raise ValueError(f"{len(slots)} slot lists for {len(lengths)} clips")
  rows = np.full(shape, -1, np.int32)
  for n, ((b, positions), length) in enumerate(zip(slots, lengths)):
    positions = np.asarray(positions, np.int64)
    if positions.shape != (length,):
      raise ValueError(f"clip {n}: {positions.size} audio slots for {length} feature frames")
    if length > frames_per_clip:
      raise ValueError(f"clip {n}: length {length} > {frames_per_clip} padded frames")
    if not 0 <= b < shape[0] or (positions.size and (positions.min() < 0 or positions.max() >= shape[1])):
      raise ValueError(f"clip {n}: slot (row {b}, positions {positions.min()}..{positions.max()}) outside {shape}")
    if (rows[b, positions] >= 0).any():
      raise ValueError(f"clip {n}: audio slots overlap another clip's in row {b}")
    rows[b, positions] = n * frames_per_clip + np.arange(length)
  return rows
