"""Stacked identical layers (created with nnx.vmap, a leading (num_layers,) axis) applied with lax.scan.

Used by the speech encoders (SenseVoice, WhisperVQ), whose layers carry no sharding annotations.
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx


def make_stack(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds `num_layers` copies of `make_layer(rngs)` with their parameters stacked on axis 0."""
  if num_layers < 1:
    raise ValueError(f"a layer stack needs at least one layer, got {num_layers}")

  @nnx.split_rngs(splits=num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=num_layers)
  def build(r: nnx.Rngs) -> nnx.Module:
    return make_layer(r)

  return build(rngs)


def scan_stack(stack: nnx.Module, x: jax.Array, apply: Callable[[nnx.Module, jax.Array], jax.Array],
               start: int = 0, stop: int | None = None) -> jax.Array:
  """Runs x through layers [start, stop) of a stack: x = apply(layer, x) for each, in order."""
  graphdef, state = nnx.split(stack)
  state = jax.tree.map(lambda a: a[start:stop], state)

  def body(h, layer_state):
    return apply(nnx.merge(graphdef, layer_state), h), None

  return jax.lax.scan(body, x, state)[0]
