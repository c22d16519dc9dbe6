"""Speech-input adapter: the ResamplerProjector and the splice of projected features into input embeddings.

Projector (upstream `ResamplerProjector(512, hidden)`): LayerNorm(in, eps 1e-5) -> Linear(in -> hidden, no
bias) -> exact GELU -> Linear(hidden -> hidden, no bias); linears initialised N(0, 0.02). One LLM position per
encoder frame (no downsampling).

Splice (upstream `DreamBaseModel.forward`): the projected rows overwrite the input embeddings at the
`<|context_of_audio|>` slots. Each row's features come in slot order (the clips of all its samples
concatenated, as the data pipeline packs them: omnidiff_jax.data.packing), so one (B, L) slot map says where.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
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


def splice_features(embeds: Array, features: Array, slots: Array) -> Array:
  """Overwrites placeholder-slot embeddings with continuous features, row by row, in slot order.

  embeds: (B, L, D) token embeddings; features: (B, F, D) rows in slot order (the k-th slot of row b takes
  features[b, k]; unused rows ignored); slots: (B, L) bool or 0/1 int, at most F set per row (extra slots
  repeat row F - 1). Returns (B, L, D) in embeds' dtype. The gather stays within each row, so a batch
  sharded over rows needs no communication.
  """
  slots = slots.astype(bool)
  index = jnp.clip(jnp.cumsum(slots, axis=1) - 1, 0, features.shape[1] - 1)
  gathered = jnp.take_along_axis(features, index[..., None], axis=1).astype(embeds.dtype)
  return jnp.where(slots[..., None], gathered, embeds)
