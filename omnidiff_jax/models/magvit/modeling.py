"""MAGVIT-v2 image tokenizer (Show-o's `showlab/magvitv2`, vendored by Omni-Diffusion) in Flax NNX.

images (B, H, W, 3) in [-1, 1] -> Encoder -> latents z (B, H/f, W/f, 13) -> LFQ -> codes (B, H/f * W/f)
codes -> ±1 bits (B, h, w, 13) -> Decoder -> images (B, H, W, 3) in [-1, 1], f = 2 ** (levels - 1).

NHWC throughout. The module tree mirrors the PyTorch module names (encoder.down[L].block[j].conv1, ...), so
the checkpoint converter (omnidiff_jax.models.magvit.params) derives the name map from this tree. 1x1 convs
(attention q/k/v/proj_out, nin_shortcut, quant_conv, post_quant_conv) are nnx.Linear over channels.

LFQ: bit c = [z_c > 0] (z == 0 gives bit 0), code = sum_c bit_c * 2 ** (bits - 1 - c): channel 0 is the most
significant bit; codes are flattened row-major over (h, w). The entropy/commitment losses of upstream's
`LFQuantizer.forward` are training-only and discarded by its `get_code`, so they are not ported.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

Array = jax.Array

GROUPS = 32   # upstream's GroupNorm(32, C); model_config's norm_groups (the demo's 32-channel model uses fewer)
NORM_EPS = 1e-6


def model_config(**overrides) -> ml_collections.ConfigDict:
  """The released `showlab/magvitv2` shape (upstream `MAGVITv2()` defaults), with optional overrides."""
  cfg = ml_collections.ConfigDict(dict(
      ch=128,
      encoder_ch_mult=(1, 2, 2, 4, 4),
      encoder_num_res_blocks=(4, 3, 4, 3, 4),
      decoder_ch_mult=(1, 1, 2, 2, 4),
      decoder_num_res_blocks=(4, 4, 3, 4, 3),  # indexed by level (the decoder runs levels last -> 0)
      z_channels=13,                            # LFQ bits: 2**13 = 8192 codes
      norm_groups=GROUPS,                       # GroupNorm groups; upstream's 32 (with 32 channels: 1 per group)
      in_channels=3,
      out_channels=3,
      param_dtype="float32",
      dtype="float32",                          # conv/matmul dtype; GroupNorm and softmax stay fp32
  ))
  cfg.update(overrides)
  return cfg


def _swish(x: Array) -> Array:
  return x * jax.nn.sigmoid(x)


class _Layers:
  """Layer factory carrying the dtypes and rngs, so every conv/linear is built the same way."""

  def __init__(self, dtype: str, param_dtype: str, rngs: nnx.Rngs, norm_groups: int = GROUPS):
    self.dtype, self.param_dtype, self.rngs = jnp.dtype(dtype), jnp.dtype(param_dtype), rngs
    self.norm_groups = norm_groups

  def conv3x3(self, cin: int, cout: int, strides: int = 1, padding="SAME") -> nnx.Conv:
    return nnx.Conv(cin, cout, (3, 3), strides, padding=padding, dtype=self.dtype, param_dtype=self.param_dtype,
                    rngs=self.rngs)

  def linear(self, cin: int, cout: int) -> nnx.Linear:
    return nnx.Linear(cin, cout, dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs)

  def norm(self, channels: int) -> nnx.GroupNorm:
    """torch GroupNorm(norm_groups, C, eps=1e-6); statistics in fp32 with the two-pass variance (as torch)."""
    return nnx.GroupNorm(channels, num_groups=self.norm_groups, epsilon=NORM_EPS, dtype=jnp.float32,
                         param_dtype=self.param_dtype, use_fast_variance=False, rngs=self.rngs)


class ResnetBlock(nnx.Module):
  """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus x (1x1 `nin_shortcut` iff cin != cout).

  x: (B, H, W, cin) -> (B, H, W, cout).
  """

  def __init__(self, cin: int, cout: int, layers: _Layers):
    self.norm1 = layers.norm(cin)
    self.conv1 = layers.conv3x3(cin, cout)
    self.norm2 = layers.norm(cout)
    self.conv2 = layers.conv3x3(cout, cout)
    self.nin_shortcut = layers.linear(cin, cout) if cin != cout else None

  def __call__(self, x: Array) -> Array:
    h = self.conv1(_swish(self.norm1(x)))
    h = self.conv2(_swish(self.norm2(h)))
    if self.nin_shortcut is not None:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nnx.Module):
  """Single-head self-attention over the H*W positions, scale C**-0.5, residual. x: (B, H, W, C)."""

  def __init__(self, channels: int, layers: _Layers):
    self.norm = layers.norm(channels)
    self.q = layers.linear(channels, channels)
    self.k = layers.linear(channels, channels)
    self.v = layers.linear(channels, channels)
    self.proj_out = layers.linear(channels, channels)

  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    normed = self.norm(x)
    q, k, v = (proj(normed).reshape(b, h * w, c) for proj in (self.q, self.k, self.v))
    scores = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32) * c ** -0.5
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bij,bjc->bic", probs, v).reshape(b, h, w, c)
    return x + self.proj_out(out)


class Downsample(nnx.Module):
  """Zero-pad right/bottom by 1, then a 3x3 stride-2 VALID conv. (B, H, W, C) -> (B, H/2, W/2, C)."""

  def __init__(self, channels: int, layers: _Layers):
    self.conv = layers.conv3x3(channels, channels, strides=2, padding=((0, 1), (0, 1)))

  def __call__(self, x: Array) -> Array:
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest x2 (jnp.repeat per axis), then a 3x3 conv. (B, H, W, C) -> (B, 2H, 2W, C)."""

  def __init__(self, channels: int, layers: _Layers):
    self.conv = layers.conv3x3(channels, channels)

  def __call__(self, x: Array) -> Array:
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class Level(nnx.Module):
  """One resolution level: `block` ResnetBlocks, then an optional `downsample` / `upsample` (torch names)."""

  def __init__(self, cin: int, cout: int, num_blocks: int, layers: _Layers, resample: str | None):
    self.block = nnx.List([ResnetBlock(cin if j == 0 else cout, cout, layers) for j in range(num_blocks)])
    self.downsample = Downsample(cout, layers) if resample == "down" else None
    self.upsample = Upsample(cout, layers) if resample == "up" else None

  def __call__(self, x: Array) -> Array:
    for block in self.block:
      x = block(x)
    for resample in (self.downsample, self.upsample):
      if resample is not None:
        x = resample(x)
    return x


class Mid(nnx.Module):
  """ResnetBlock -> AttnBlock -> ResnetBlock at the lowest resolution, C channels throughout."""

  def __init__(self, channels: int, layers: _Layers):
    self.block_1 = ResnetBlock(channels, channels, layers)
    self.attn_1 = AttnBlock(channels, layers)
    self.block_2 = ResnetBlock(channels, channels, layers)

  def __call__(self, x: Array) -> Array:
    return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nnx.Module):
  """images (B, H, W, in_channels) -> pre-quantization latents (B, H/f, W/f, z_channels), f = 2**(levels-1).

  Upstream's per-level attention never triggers for the released config (attn_resolutions=[5]), so levels
  hold only ResnetBlocks.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, layers: _Layers):
    ch, mult, blocks = cfg.ch, tuple(cfg.encoder_ch_mult), tuple(cfg.encoder_num_res_blocks)
    self.conv_in = layers.conv3x3(cfg.in_channels, ch)
    in_mult = (1,) + mult
    self.down = nnx.List([
        Level(ch * in_mult[i], ch * mult[i], blocks[i], layers, "down" if i < len(mult) - 1 else None)
        for i in range(len(mult))])
    top = ch * mult[-1]
    self.mid = Mid(top, layers)
    self.norm_out = layers.norm(top)
    self.conv_out = layers.conv3x3(top, cfg.z_channels)
    self.quant_conv = layers.linear(cfg.z_channels, cfg.z_channels)

  def __call__(self, images: Array) -> Array:
    h = self.conv_in(images)
    for level in self.down:
      h = level(h)
    h = self.mid(h)
    h = self.conv_out(_swish(self.norm_out(h)))
    return self.quant_conv(h)


class Decoder(nnx.Module):
  """quantized latents (B, h, w, z_channels) -> images (B, h*f, w*f, out_channels), unclipped.

  `up[L]` is level L (torch's `up.{L}`); levels run from the last to 0, with an Upsample after every L != 0.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, layers: _Layers):
    ch, mult, blocks = cfg.ch, tuple(cfg.decoder_ch_mult), tuple(cfg.decoder_num_res_blocks)
    top = ch * mult[-1]
    self.post_quant_conv = layers.linear(cfg.z_channels, cfg.z_channels)
    self.conv_in = layers.conv3x3(cfg.z_channels, top)
    self.mid = Mid(top, layers)
    level_in = [ch * mult[i + 1] if i + 1 < len(mult) else top for i in range(len(mult))]
    self.up = nnx.List([
        Level(level_in[i], ch * mult[i], blocks[i], layers, "up" if i > 0 else None) for i in range(len(mult))])
    self.norm_out = layers.norm(ch * mult[0])
    self.conv_out = layers.conv3x3(ch * mult[0], cfg.out_channels)

  def __call__(self, z: Array) -> Array:
    h = self.mid(self.conv_in(self.post_quant_conv(z)))
    for level in reversed(self.up):
      h = level(h)
    return self.conv_out(_swish(self.norm_out(h)))


def codes_from_latents(z: Array) -> Array:
  """LFQ index. z: (B, h, w, bits) float -> (B, h*w) int32, row-major; channel 0 is the MSB, z == 0 -> bit 0."""
  bits = z.shape[-1]
  weights = 2 ** jnp.arange(bits - 1, -1, -1, dtype=jnp.int32)
  codes = jnp.sum((z > 0).astype(jnp.int32) * weights, axis=-1)
  return codes.reshape(z.shape[0], -1)


def latents_from_codes(codes: Array, bits: int, grid: tuple[int, int] | None = None) -> Array:
  """Inverse of the LFQ index: codes (B, h*w) int -> ±1 latents (B, h, w, bits) float32.

  grid = (h, w); None means square, h = w = sqrt(h*w) (upstream's default).
  """
  b, length = codes.shape
  if grid is None:
    side = math.isqrt(length)
    if side * side != length:
      raise ValueError(f"{length} codes per image is not a square; pass grid=(h, w)")
    grid = (side, side)
  if grid[0] * grid[1] != length:
    raise ValueError(f"grid {grid} does not hold {length} codes")
  shifts = jnp.arange(bits - 1, -1, -1, dtype=jnp.int32)
  bit_values = (codes.astype(jnp.int32)[..., None] >> shifts) & 1
  return (bit_values.astype(jnp.float32) * 2 - 1).reshape(b, *grid, bits)


class MagvitV2(nnx.Module):
  """Encoder + LFQ + decoder. `cfg` is the `model` section of configs/magvit.py."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    groups = cfg.get("norm_groups", GROUPS)   # configs saved before the field existed: upstream's 32
    for name, mult in (("encoder", cfg.encoder_ch_mult), ("decoder", cfg.decoder_ch_mult)):
      bad = [cfg.ch * m for m in (1, *mult) if (cfg.ch * m) % groups]
      if bad:
        raise ValueError(f"{name} channel counts {bad} are not multiples of GroupNorm's {groups} groups "
                         "(model.norm_groups)")
    self.cfg = ml_collections.FrozenConfigDict(cfg)
    layers = _Layers(cfg.dtype, cfg.param_dtype, rngs, groups)
    self.encoder = Encoder(cfg, layers)
    self.decoder = Decoder(cfg, layers)

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.cfg.encoder_ch_mult) - 1)

  def encode_latents(self, images: Array) -> Array:
    """images (B, H, W, 3) in [-1, 1] -> pre-quantization latents (B, H/f, W/f, bits) float32."""
    return self.encoder(images).astype(jnp.float32)

  def encode(self, images: Array) -> Array:
    """images (B, H, W, 3) in [-1, 1] -> codes (B, H/f * W/f) int32 in [0, 2**bits)."""
    return codes_from_latents(self.encode_latents(images))

  def decode_raw(self, codes: Array, grid: tuple[int, int] | None = None) -> Array:
    """codes (B, h*w) -> decoder output (B, h*f, w*f, 3) float32, nominally [-1, 1] but unclipped."""
    z = latents_from_codes(codes, self.cfg.z_channels, grid)
    return self.decoder(z).astype(jnp.float32)

  def decode(self, codes: Array, grid: tuple[int, int] | None = None) -> Array:
    """codes (B, h*w) -> images (B, h*f, w*f, 3) in [0, 1] (upstream: clamp((x + 1) / 2, 0, 1))."""
    return jnp.clip((self.decode_raw(codes, grid) + 1) / 2, 0.0, 1.0)


@nnx.jit
def encode(model: MagvitV2, images: Array) -> Array:
  """Jitted `model.encode`: images (B, H, W, 3) in [-1, 1] -> codes (B, H/f * W/f) int32."""
  return model.encode(images)


@nnx.jit(static_argnames="grid")
def decode(model: MagvitV2, codes: Array, grid: tuple[int, int] | None = None) -> Array:
  """Jitted `model.decode`: codes (B, h*w) -> images (B, h*f, w*f, 3) in [0, 1]."""
  return model.decode(codes, grid)


def _batched(fn, inputs, batch_size: int, desc: str | None):
  """Applies fn to fixed-size batches of inputs (N, ...) (the last one padded by repetition, so one compiled
  shape serves every batch) and concatenates the numpy results, trimmed to N."""
  inputs = np.asarray(inputs)
  outputs = []
  for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=desc is None):
    batch = inputs[start:start + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
    outputs.append(np.asarray(fn(batch))[:batch_size - pad])
  return np.concatenate(outputs)


def encode_batched(model: MagvitV2, images, batch_size: int, desc: str | None = None):
  """images (N, H, W, 3) in [-1, 1] (numpy) -> codes (N, H/f * W/f) int32 numpy, `batch_size` at a time;
  `desc` shows a tqdm progress bar."""
  return _batched(lambda x: encode(model, x), images, batch_size, desc)


def decode_batched(model: MagvitV2, codes, batch_size: int, grid: tuple[int, int] | None = None,
                   desc: str | None = None):
  """codes (N, h*w) -> images (N, h*f, w*f, 3) float32 numpy in [0, 1], `batch_size` at a time."""
  return _batched(lambda c: decode(model, c, grid), codes, batch_size, desc)
