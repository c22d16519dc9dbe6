"""Small PyTorch-shaped layers for the GLM-4-Voice speech decoder (flow model + HiFT vocoder), in Flax NNX.

Parameters keep PyTorch's layouts and names (Linear weight (out, in), Conv1d weight (out, in, k),
ConvTranspose1d weight (in, out, k), LayerNorm/GroupNorm weight + bias), so a `flow.pt` / `hift.pt` state dict
maps onto the NNX state key for key (see omnidiff_jax/models/speech_out/params.py). Activations are
channels-last, (B, T, C); XLA picks the kernel layout. Parameter-free placeholders (`Act`) stand where torch's
nn.Sequential holds an activation or dropout, so list indices match the torch keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def _uniform(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int) -> Array:
  bound = 1.0 / max(fan_in, 1) ** 0.5
  return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)


def mish(x: Array) -> Array:
  return x * jnp.tanh(jax.nn.softplus(x))


class Act(nnx.Module):
  """Parameter-free slot (activation / dropout in a torch nn.Sequential); applied explicitly by the caller."""


class Linear(nnx.Module):
  """y = x W^T + b. weight: (out, in)."""

  def __init__(self, d_in: int, d_out: int, *, bias: bool = True, rngs: nnx.Rngs):
    self.weight = nnx.Param(_uniform(rngs, (d_out, d_in), d_in))
    self.bias = nnx.Param(_uniform(rngs, (d_out,), d_in)) if bias else None

  def __call__(self, x: Array) -> Array:
    y = x @ self.weight[...].T
    return y if self.bias is None else y + self.bias[...]


class Embedding(nnx.Module):
  """weight: (vocab, dim); ids (...,) -> (..., dim)."""

  def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs):
    self.weight = nnx.Param(jax.random.normal(rngs.params(), (vocab, dim), jnp.float32))

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.weight[...], ids, axis=0)


class Conv1d(nnx.Module):
  """torch.nn.Conv1d on (B, T, C_in) -> (B, T', C_out). weight: (out, in, k)."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1,
               rngs: nnx.Rngs):
    self.stride, self.padding, self.dilation = stride, padding, dilation
    self.weight = nnx.Param(_uniform(rngs, (c_out, c_in, kernel), c_in * kernel))
    self.bias = nnx.Param(_uniform(rngs, (c_out,), c_in * kernel))

  def __call__(self, x: Array) -> Array:
    y = jax.lax.conv_general_dilated(
        x, self.weight[...], (self.stride,), [(self.padding, self.padding)], rhs_dilation=(self.dilation,),
        dimension_numbers=("NWC", "OIW", "NWC"), precision=jax.lax.Precision.HIGHEST)
    return y + self.bias[...]


class ConvTranspose1d(nnx.Module):
  """torch.nn.ConvTranspose1d on (B, T, C_in) -> (B, (T-1)*stride - 2*padding + k, C_out). weight: (in, out, k).

  Computed as a stride-1 convolution of the stride-dilated input with the flipped kernel and padding k-1-p.
  """

  def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int, padding: int, rngs: nnx.Rngs):
    self.stride, self.padding = stride, padding
    self.weight = nnx.Param(_uniform(rngs, (c_in, c_out, kernel), c_out * kernel))
    self.bias = nnx.Param(_uniform(rngs, (c_out,), c_out * kernel))

  def __call__(self, x: Array) -> Array:
    kernel = self.weight.shape[-1]
    pad = kernel - 1 - self.padding
    y = jax.lax.conv_general_dilated(
        x, self.weight[...][:, :, ::-1], (1,), [(pad, pad)], lhs_dilation=(self.stride,),
        dimension_numbers=("NWC", "IOW", "NWC"), precision=jax.lax.Precision.HIGHEST)
    return y + self.bias[...]


class LayerNorm(nnx.Module):
  """torch.nn.LayerNorm over the last axis (eps 1e-5)."""

  def __init__(self, dim: int, eps: float = 1e-5):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

  def __call__(self, x: Array) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm on (B, T, C), statistics over the valid frames only.

  mask: (B, T, 1) of 0/1 or None (all valid). With an all-ones mask this is exactly torch's GroupNorm; with
  padding it makes a padded batch row equal to the same row decoded alone.
  """

  def __init__(self, num_groups: int, channels: int, eps: float = 1e-5):
    self.num_groups, self.eps = num_groups, eps
    self.weight = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    b, t, c = x.shape
    g = x.reshape(b, t, self.num_groups, c // self.num_groups)
    m = jnp.ones((b, t, 1, 1), x.dtype) if mask is None else mask.reshape(b, t, 1, 1).astype(x.dtype)
    count = jnp.sum(m, axis=(1, 3), keepdims=True) * (c // self.num_groups)
    mean = jnp.sum(g * m, axis=(1, 3), keepdims=True) / count
    var = jnp.sum(jnp.square(g - mean) * m, axis=(1, 3), keepdims=True) / count
    g = (g - mean) * jax.lax.rsqrt(var + self.eps)
    return g.reshape(b, t, c) * self.weight[...] + self.bias[...]
