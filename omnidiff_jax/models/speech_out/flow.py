"""GLM-4-Voice flow model (CosyVoice `MaskedDiffWithXvec`): speech tokens -> 80-bin mel at 22,050 Hz / hop 256.

  tokens (B, N) -> Embedding * mask -> BlockConformerEncoder -> encoder_proj (-> 80)
  -> InterpolateRegulator (nearest to F frames, [Conv1d k3 + GroupNorm(1) + Mish] x R, 1x1 Conv1d)
  = mu (B, F, 80);  spks = Linear(normalize(x-vector)) (B, 80);  cond = prompt mel or 0 (B, F, 80)
  -> ConditionalCFM: Euler over t_span = 1 - cos(pi/2 * linspace(0, 1, n+1)) from noise z (B, F, 80), with
     classifier-free guidance x += dt * ((1 + r) v(x, mu, spks, cond) - r v(x, 0, 0, 0))
  -> mel (B, F, 80).

The velocity field v is the Matcha-style 1-D U-Net `ConditionalDecoder` (ResnetBlock1D + diffusers
BasicTransformerBlocks per level). Module and attribute names mirror the torch modules so `flow.pt` keys map
1:1 onto the NNX state. Activations are (B, T, C). Padded batch rows: every conv input, GroupNorm statistic
and attention key is masked, so a padded row equals the same item decoded alone (upstream decodes B=1 only;
its float 0/1 U-Net attention mask is then a softmax no-op and is implemented as a key mask here).
The initial noise z is an explicit input (upstream draws it after torch.manual_seed(42)).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from omnidiff_jax.models.speech_out.layers import (Act, Conv1d, ConvTranspose1d, Embedding, GroupNorm,
                                                       LayerNorm, Linear, mish)

Array = jax.Array
_NEG = -1e30


def num_mel_frames(num_tokens, cfg: ml_collections.ConfigDict):
  """Upstream `int(token_len / input_frame_rate * sample_rate / hop)` in float32 (about 6.89 frames/token)."""
  n = np.asarray(num_tokens, np.int32).astype(np.float32)
  frames = n / np.float32(cfg.input_frame_rate) * np.float32(cfg.sample_rate) / np.float32(cfg.hop_size)
  return frames.astype(np.int32)


# ----------------------------------------------------------------------------------------------- encoder


def rel_positional_encoding(length: int, dim: int) -> Array:
  """ESPnet relative PE for relative positions T-1, ..., -(T-1): (2T-1, dim), sin/cos interleaved."""
  rel = jnp.arange(length - 1, -length, -1, dtype=jnp.float32)[:, None]
  div = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * jnp.float32(-(math.log(10000.0) / dim)))
  angle = rel * div
  return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(2 * length - 1, dim)


class LinearNoSubsampling(nnx.Module):
  """embed.out = [Linear, LayerNorm, Dropout]; then x * sqrt(d) and the relative PE."""

  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
    self.out = nnx.List([Linear(d_in, d_out, rngs=rngs), LayerNorm(d_out), Act()])

  def __call__(self, x: Array) -> tuple[Array, Array]:
    x = self.out[1](self.out[0](x))
    return x * math.sqrt(x.shape[-1]), rel_positional_encoding(x.shape[1], x.shape[-1])


class BlockRelPositionAttention(nnx.Module):
  """Transformer-XL relative attention (pos_bias_u/v, rel_shift) over a block-causal grid mask."""

  def __init__(self, heads: int, dim: int, block_size: int, *, rngs: nnx.Rngs):
    self.h, self.d_k, self.block_size = heads, dim // heads, block_size
    self.linear_q = Linear(dim, dim, rngs=rngs)
    self.linear_k = Linear(dim, dim, rngs=rngs)
    self.linear_v = Linear(dim, dim, rngs=rngs)
    self.linear_out = Linear(dim, dim, rngs=rngs)
    self.linear_pos = Linear(dim, dim, bias=False, rngs=rngs)
    self.pos_bias_u = nnx.Param(jax.random.normal(rngs.params(), (heads, self.d_k)) * 0.1)
    self.pos_bias_v = nnx.Param(jax.random.normal(rngs.params(), (heads, self.d_k)) * 0.1)

  def __call__(self, x: Array, key_mask: Array, pos_emb: Array) -> Array:
    """x: (B, T, D), key_mask: (B, T) bool, pos_emb: (2T-1, D) -> (B, T, D)."""
    b, t, _ = x.shape
    split = lambda y: y.reshape(*y.shape[:-1], self.h, self.d_k)
    q, k, v = split(self.linear_q(x)), split(self.linear_k(x)), split(self.linear_v(x))
    p = split(self.linear_pos(pos_emb))  # (2T-1, h, d_k)
    hp = jax.lax.Precision.HIGHEST
    ac = jnp.einsum("bqhd,bkhd->bhqk", q + self.pos_bias_u[...], k, precision=hp)
    bd = jnp.einsum("bqhd,phd->bhqp", q + self.pos_bias_v[...], p, precision=hp)
    i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
    bd = jnp.take_along_axis(bd, jnp.broadcast_to(t - 1 - i + j, (b, self.h, t, t)), axis=-1)  # rel_shift
    scores = (ac + bd) / math.sqrt(self.d_k)
    grid = (j <= i) | (j // self.block_size == i // self.block_size)
    allowed = grid[None, None] & key_mask[:, None, None, :]
    attn = jnp.where(allowed, jax.nn.softmax(jnp.where(allowed, scores, _NEG), axis=-1), 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v, precision=hp).reshape(b, t, self.h * self.d_k)
    return self.linear_out(out)


class FeedForward(nnx.Module):
  """w_2(swish(w_1(x)))."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.w_1 = Linear(dim, hidden, rngs=rngs)
    self.w_2 = Linear(hidden, dim, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.w_2(jax.nn.silu(self.w_1(x)))


class ConformerLayer(nnx.Module):
  """Pre-LN layer without macaron FF or conv module: x += MHA(LN(x)); x += FF(LN(x))."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d = cfg.output_size
    self.self_attn = BlockRelPositionAttention(cfg.attention_heads, d, cfg.block_size, rngs=rngs)
    self.feed_forward = FeedForward(d, cfg.linear_units, rngs=rngs)
    self.norm_ff = LayerNorm(d)
    self.norm_mha = LayerNorm(d)

  def __call__(self, x: Array, key_mask: Array, pos_emb: Array) -> Array:
    x = x + self.self_attn(self.norm_mha(x), key_mask, pos_emb)
    return x + self.feed_forward(self.norm_ff(x))


class BlockConformerEncoder(nnx.Module):
  """(B, N, input_size), lengths (B,) -> (B, N, output_size)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.embed = LinearNoSubsampling(cfg.input_size, cfg.output_size, rngs=rngs)
    self.encoders = nnx.List([ConformerLayer(cfg, rngs=rngs) for _ in range(cfg.num_blocks)])
    self.after_norm = LayerNorm(cfg.output_size)

  def __call__(self, x: Array, key_mask: Array) -> Array:
    x, pos_emb = self.embed(x)
    for layer in self.encoders:
      x = layer(x, key_mask, pos_emb)
    return self.after_norm(x)


class InterpolateRegulator(nnx.Module):
  """Nearest-neighbour resampling to F frames, then [Conv1d k3, GroupNorm(1), Mish] x R and a 1x1 Conv1d."""

  def __init__(self, channels: int, num_ratios: int, *, rngs: nnx.Rngs):
    layers = []
    for _ in range(num_ratios):
      layers += [Conv1d(channels, channels, 3, padding=1, rngs=rngs), GroupNorm(1, channels), Act()]
    self.model = nnx.List(layers + [Conv1d(channels, channels, 1, rngs=rngs)])

  def __call__(self, h: Array, token_lens: Array, frame_lens: Array, num_frames: int) -> Array:
    """h: (B, N, C), token_lens/frame_lens: (B,) -> (B, num_frames, C), zero beyond each frame length.

    Row b reads token floor(j * (N_b / F_b)) (float32, as torch's F.interpolate(mode='nearest') on B=1).
    """
    scale = token_lens.astype(jnp.float32) / frame_lens.astype(jnp.float32)
    j = jnp.arange(num_frames, dtype=jnp.float32)
    src = jnp.minimum(jnp.floor(j[None] * scale[:, None]).astype(jnp.int32), token_lens[:, None] - 1)
    mask = (jnp.arange(num_frames)[None] < frame_lens[:, None])[..., None].astype(h.dtype)
    x = jnp.take_along_axis(h, src[..., None], axis=1) * mask
    for i in range(0, len(self.model) - 1, 3):
      x = mish(self.model[i + 1](self.model[i](x) * mask, mask)) * mask
    return self.model[len(self.model) - 1](x) * mask


# ------------------------------------------------------------------------------- U-Net velocity field


def sinusoidal_time_embedding(t: Array, dim: int, scale: float = 1000.0) -> Array:
  """Matcha SinusoidalPosEmb: t (B,) -> (B, dim) = [sin, cos](scale * t * exp(-log(1e4) k / (dim/2 - 1)))."""
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * jnp.float32(-(math.log(10000) / (half - 1))))
  arg = scale * t[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class TimestepEmbedding(nnx.Module):
  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
    self.linear_1 = Linear(d_in, d_out, rngs=rngs)
    self.linear_2 = Linear(d_out, d_out, rngs=rngs)

  def __call__(self, t: Array) -> Array:
    return self.linear_2(jax.nn.silu(self.linear_1(t)))


class Block1D(nnx.Module):
  """block = [Conv1d k3, GroupNorm(8), Mish], masked in and out."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
    self.block = nnx.List([Conv1d(c_in, c_out, 3, padding=1, rngs=rngs), GroupNorm(8, c_out), Act()])

  def __call__(self, x: Array, mask: Array) -> Array:
    return mish(self.block[1](self.block[0](x * mask), mask)) * mask


class ResnetBlock1D(nnx.Module):
  def __init__(self, c_in: int, c_out: int, time_dim: int, *, rngs: nnx.Rngs):
    self.mlp = nnx.List([Act(), Linear(time_dim, c_out, rngs=rngs)])
    self.block1 = Block1D(c_in, c_out, rngs=rngs)
    self.block2 = Block1D(c_out, c_out, rngs=rngs)
    self.res_conv = Conv1d(c_in, c_out, 1, rngs=rngs)

  def __call__(self, x: Array, mask: Array, t_emb: Array) -> Array:
    h = self.block1(x, mask) + self.mlp[1](mish(t_emb))[:, None, :]
    return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nnx.Module):
  """diffusers Attention (self-attention, no q/k/v bias, scale head_dim^-0.5), keys masked."""

  def __init__(self, dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs):
    self.heads, self.head_dim = heads, head_dim
    inner = heads * head_dim
    self.to_q = Linear(dim, inner, bias=False, rngs=rngs)
    self.to_k = Linear(dim, inner, bias=False, rngs=rngs)
    self.to_v = Linear(dim, inner, bias=False, rngs=rngs)
    self.to_out = nnx.List([Linear(inner, dim, rngs=rngs), Act()])

  def __call__(self, x: Array, key_mask: Array) -> Array:
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, self.heads, self.head_dim)
    q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
    hp = jax.lax.Precision.HIGHEST
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=hp) / math.sqrt(self.head_dim)
    attn = jax.nn.softmax(jnp.where(key_mask[:, None, None, :], scores, _NEG), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v, precision=hp).reshape(b, t, -1)
    return self.to_out[0](out)


class GELUProj(nnx.Module):
  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
    self.proj = Linear(d_in, d_out, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return jax.nn.gelu(self.proj(x), approximate=False)


class TransformerFeedForward(nnx.Module):
  """net = [GELU(proj d -> 4d), Dropout, Linear 4d -> d]."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.net = nnx.List([GELUProj(dim, 4 * dim, rngs=rngs), Act(), Linear(4 * dim, dim, rngs=rngs)])

  def __call__(self, x: Array) -> Array:
    return self.net[2](self.net[0](x))


class BasicTransformerBlock(nnx.Module):
  def __init__(self, dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(dim)
    self.attn1 = Attention(dim, heads, head_dim, rngs=rngs)
    self.norm3 = LayerNorm(dim)
    self.ff = TransformerFeedForward(dim, rngs=rngs)

  def __call__(self, x: Array, key_mask: Array) -> Array:
    x = x + self.attn1(self.norm1(x), key_mask)
    return x + self.ff(self.norm3(x))


class Downsample1D(nnx.Module):
  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.conv = Conv1d(dim, dim, 3, stride=2, padding=1, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.conv(x)


class Upsample1D(nnx.Module):
  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.conv = ConvTranspose1d(dim, dim, 4, stride=2, padding=1, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.conv(x)


class ConditionalDecoder(nnx.Module):
  """Velocity field v(x, mask, mu, t, spks, cond): 1-D U-Net over concat[x, mu, spks, cond] (B, T, 320)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    channels = tuple(cfg.channels)
    self.in_channels = cfg.in_channels
    time_dim = channels[0] * 4
    block = lambda dim: nnx.List([BasicTransformerBlock(dim, cfg.num_heads, cfg.attention_head_dim, rngs=rngs)
                                  for _ in range(cfg.n_blocks)])
    self.time_mlp = TimestepEmbedding(cfg.in_channels, time_dim, rngs=rngs)
    self.down_blocks, self.mid_blocks, self.up_blocks = nnx.List([]), nnx.List([]), nnx.List([])
    c_out = cfg.in_channels
    for i, ch in enumerate(channels):
      c_in, c_out = c_out, ch
      last = i == len(channels) - 1
      down = Conv1d(ch, ch, 3, padding=1, rngs=rngs) if last else Downsample1D(ch, rngs=rngs)
      self.down_blocks.append(nnx.List([ResnetBlock1D(c_in, ch, time_dim, rngs=rngs), block(ch), down]))
    for _ in range(cfg.num_mid_blocks):
      self.mid_blocks.append(nnx.List([ResnetBlock1D(channels[-1], channels[-1], time_dim, rngs=rngs),
                                       block(channels[-1])]))
    up_channels = channels[::-1] + (channels[0],)
    for i in range(len(up_channels) - 1):
      c_in, ch = up_channels[i] * 2, up_channels[i + 1]
      last = i == len(up_channels) - 2
      up = Conv1d(ch, ch, 3, padding=1, rngs=rngs) if last else Upsample1D(ch, rngs=rngs)
      self.up_blocks.append(nnx.List([ResnetBlock1D(c_in, ch, time_dim, rngs=rngs), block(ch), up]))
    self.final_block = Block1D(up_channels[-1], up_channels[-1], rngs=rngs)
    self.final_proj = Conv1d(up_channels[-1], cfg.out_channels, 1, rngs=rngs)

  def __call__(self, x: Array, mask: Array, mu: Array, t: Array, spks: Array, cond: Array) -> Array:
    """x, mu, cond: (B, T, 80); mask: (B, T, 1); t: (B,); spks: (B, 80) -> velocity (B, T, 80)."""
    t_emb = self.time_mlp(sinusoidal_time_embedding(t, self.in_channels))
    spks = jnp.broadcast_to(spks[:, None, :], x.shape[:2] + spks.shape[-1:])
    x = jnp.concatenate([x, mu, spks, cond], axis=-1)

    def transformers(blocks, x, m):
      for blk in blocks:
        x = blk(x, m[..., 0] > 0)
      return x

    hiddens, masks = [], [mask]
    for resnet, blocks, down in self.down_blocks:
      m = masks[-1]
      x = transformers(blocks, resnet(x, m, t_emb), m)
      hiddens.append(x)
      x = down(x * m)
      masks.append(m[:, ::2])
    masks = masks[:-1]
    m = masks[-1]
    for resnet, blocks in self.mid_blocks:
      x = transformers(blocks, resnet(x, m, t_emb), m)
    for resnet, blocks, up in self.up_blocks:
      m, skip = masks.pop(), hiddens.pop()
      x = jnp.concatenate([x[:, :skip.shape[1]], skip], axis=-1)
      x = transformers(blocks, resnet(x, m, t_emb), m)
      x = up(x * m)
    x = self.final_block(x, m)
    return self.final_proj(x * m) * mask


class ConditionalCFM(nnx.Module):
  """Euler ODE solver with classifier-free guidance around `estimator`."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.cfg_rate = cfg.inference_cfg_rate
    self.estimator = ConditionalDecoder(cfg.estimator, rngs=rngs)

  def __call__(self, noise: Array, mask: Array, mu: Array, spks: Array, cond: Array, n_timesteps: int) -> Array:
    """noise, mu, cond: (B, F, 80); mask: (B, F, 1); spks: (B, 80) -> mel (B, F, 80)."""
    t_span = 1 - jnp.cos(jnp.linspace(0, 1, n_timesteps + 1, dtype=jnp.float32) * jnp.float32(0.5 * math.pi))
    t_span = jnp.concatenate([t_span, t_span[-1:]])  # dummy entry: the last step's unused "next dt"
    b = noise.shape[0]
    # The conditional and the unconditional (mu = spks = cond = 0) passes run as one 2B batch.
    mask2 = jnp.concatenate([mask, mask])
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)])
    spks2 = jnp.concatenate([spks, jnp.zeros_like(spks)])
    cond2 = jnp.concatenate([cond, jnp.zeros_like(cond)])
    graphdef, state = nnx.split(self.estimator)

    def step(i, carry):
      x, t, dt = carry
      v = nnx.merge(graphdef, state)(jnp.concatenate([x, x]), mask2, mu2, jnp.full((2 * b,), t), spks2, cond2)
      v = (1.0 + self.cfg_rate) * v[:b] - self.cfg_rate * v[b:]
      x, t = x + dt * v, t + dt
      return x, t, t_span[i + 2] - t

    x, _, _ = jax.lax.fori_loop(0, n_timesteps, step, (noise, t_span[0], t_span[1] - t_span[0]))
    return x


# ----------------------------------------------------------------------------------------------- model


class FlowModel(nnx.Module):
  """MaskedDiffWithXvec (inference). Attribute names follow the torch module (flow.pt keys)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.input_embedding = Embedding(cfg.vocab_size, cfg.input_size, rngs=rngs)
    self.spk_embed_affine_layer = Linear(cfg.spk_embed_dim, cfg.output_size, rngs=rngs)
    self.encoder = BlockConformerEncoder(cfg.encoder, rngs=rngs)
    self.encoder_proj = Linear(cfg.encoder.output_size, cfg.output_size, rngs=rngs)
    self.length_regulator = InterpolateRegulator(cfg.output_size, cfg.num_regulator_convs, rngs=rngs)
    self.decoder = ConditionalCFM(cfg.cfm, rngs=rngs)

  def __call__(self, tokens: Array, token_lens: Array, frame_lens: Array, noise: Array, cond: Array,
               spk_embedding: Array, n_timesteps: int) -> Array:
    """Mel for (prompt +) speech tokens.

    tokens: (B, N) int (prompt tokens first, padded with anything past token_lens); token_lens, frame_lens: (B,)
    (frame_lens = num_mel_frames(token_lens)); noise: (B, F, 80) standard normal with F = noise.shape[1] >=
    max(frame_lens); cond: (B, F, 80) prompt mel in its first frames, else 0; spk_embedding: (B, 192).
    Returns mel (B, F, 80), zero beyond each frame length (prompt frames are not removed here).
    """
    num_frames = noise.shape[1]
    spk = spk_embedding / jnp.maximum(jnp.linalg.norm(spk_embedding, axis=-1, keepdims=True), 1e-12)
    spk = self.spk_embed_affine_layer(spk)
    key_mask = jnp.arange(tokens.shape[1])[None] < token_lens[:, None]
    h = self.input_embedding(jnp.maximum(tokens, 0)) * key_mask[..., None]
    h = self.encoder_proj(self.encoder(h, key_mask))
    mu = self.length_regulator(h, token_lens, frame_lens, num_frames)
    mask = (jnp.arange(num_frames)[None] < frame_lens[:, None])[..., None].astype(mu.dtype)
    return self.decoder(noise, mask, mu, spk, cond, n_timesteps)
