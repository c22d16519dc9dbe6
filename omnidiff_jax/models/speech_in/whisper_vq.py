"""GLM-4-Voice speech tokenizer: WhisperVQEncoder (quantize_encoder_only) in Flax NNX.

Log-mel (B, T, n_mels) + frame mask (B, T) -> code ids (B, T / (2 * pool)) and their mask; 12.5 Hz with the
real config (hop 160 x conv stride 2 x avg-pool 4), 16,384 codes.

  conv1 = causal Conv1d(n_mels -> d, k3, s1), conv2 = causal Conv1d(d -> d, k3, s2) (left pad 2), each + GELU
  + embed_positions[:T/2]; mask = mask[:, ::2]
  layers[0:pooling_position]: pre-LN Whisper layers (q scaled by head_dim^-0.5, k_proj without bias,
      exact GELU MLP, LN eps 1e-5) under the block-causal mask: (j <= i or same block of `block_size`) and
      key j valid, added as finfo.min
  pool: zero-pad T to a multiple of k, AvgPool1d(k); mask = mask[:, ::k]; blocks become block_size / k
  layers[pooling_position:quantize_position] at the pooled rate
  VQ: argmin_c ||c||^2 + ||x||^2 - 2 x.c over the codebook (no projection, no normalisation)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from omnidiff_jax.models.layer_stack import make_stack, scan_stack

Array = jax.Array


class WhisperLayer(nnx.Module):
  """WhisperVQEncoderLayer: x += out_proj(MHA(LN(x))); x += fc2(gelu(fc1(LN(x))))."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d, dt = cfg.d_model, jnp.dtype(cfg.dtype)
    kw = dict(dtype=dt, rngs=rngs)
    self.num_heads, self.head_dim = cfg.attention_heads, d // cfg.attention_heads
    self.self_attn_layer_norm = nnx.LayerNorm(d, epsilon=1e-5, **kw)
    self.q_proj = nnx.Linear(d, d, **kw)
    self.k_proj = nnx.Linear(d, d, use_bias=False, **kw)
    self.v_proj = nnx.Linear(d, d, **kw)
    self.out_proj = nnx.Linear(d, d, **kw)
    self.final_layer_norm = nnx.LayerNorm(d, epsilon=1e-5, **kw)
    self.fc1 = nnx.Linear(d, cfg.ffn_dim, **kw)
    self.fc2 = nnx.Linear(cfg.ffn_dim, d, **kw)

  def __call__(self, x: Array, allowed: Array) -> Array:
    """x: (B, T, d); allowed: (B, T, T) bool, query i may attend key j. Returns (B, T, d)."""
    b, t, _ = x.shape
    h = self.self_attn_layer_norm(x)
    heads = lambda a: a.reshape(b, t, self.num_heads, self.head_dim)
    q = heads(self.q_proj(h) * self.head_dim ** -0.5)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, heads(self.k_proj(h)))
    scores = jnp.where(allowed[:, None], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(x.dtype)
    attn = jnp.einsum("bhqk,bkhd->bqhd", probs, heads(self.v_proj(h))).reshape(b, t, -1)
    x = x + self.out_proj(attn)
    return x + self.fc2(jax.nn.gelu(self.fc1(self.final_layer_norm(x)), approximate=False))


def block_causal_allowed(mask: Array, block_size: int) -> Array:
  """mask: (B, T) 1 = valid. Returns (B, T, T) bool: (j <= i or i // bs == j // bs) and key j valid."""
  pos = jnp.arange(mask.shape[1])
  causal = (pos[None, :] <= pos[:, None]) | ((pos[:, None] // block_size) == (pos[None, :] // block_size))
  return causal[None] & mask[:, None, :].astype(bool)


def vector_quantize(x: Array, codebook: Array) -> Array:
  """x: (B, T, d), codebook: (V, d) -> argmin squared-distance ids (B, T) int32, in fp32 as upstream's addmm."""
  x = x.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  dist = (jnp.sum(codebook ** 2, -1) + jnp.sum(x ** 2, -1, keepdims=True)
          - 2.0 * jnp.einsum("btd,vd->btv", x, codebook))
  return jnp.argmin(dist, axis=-1).astype(jnp.int32)


class WhisperVQEncoder(nnx.Module):
  """See the module docstring. Parameters of `layers` are stacked on a leading (quantize_position,) axis."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    cfg = ml_collections.FrozenConfigDict(cfg)
    if not 0 < cfg.pooling_position <= cfg.quantize_position:
      raise ValueError(f"need 0 < pooling_position ({cfg.pooling_position}) <= quantize_position "
                       f"({cfg.quantize_position})")
    self.cfg = cfg
    d, dt = cfg.d_model, jnp.dtype(cfg.dtype)
    self.conv1 = nnx.Conv(cfg.num_mel_bins, d, kernel_size=(3,), padding=[(2, 0)], dtype=dt, rngs=rngs)
    self.conv2 = nnx.Conv(d, d, kernel_size=(3,), strides=(2,), padding=[(2, 0)], dtype=dt, rngs=rngs)
    self.embed_positions = nnx.Param(jnp.zeros((cfg.max_source_positions, d), jnp.float32))
    self.layers = make_stack(lambda r: WhisperLayer(cfg, rngs=r), cfg.quantize_position, rngs)
    self.codebook = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (cfg.codebook_size, d)))

  def __call__(self, mels: Array, mel_mask: Array) -> tuple[Array, Array]:
    """mels: (B, T, n_mels) with T a multiple of 2 * pooling_kernel_size; mel_mask: (B, T) 1 = valid frame.

    Returns code ids (B, T / (2k)) int32 and the code mask (B, T / (2k)) int32 (1 = a real code).
    """
    hidden, mask = self.encode(mels, mel_mask)
    return vector_quantize(hidden, self.codebook[...]), mask

  def encode(self, mels: Array, mel_mask: Array) -> tuple[Array, Array]:
    """The quantizer's input: (B, T / (2k), d) after layer `quantize_position`, and the code mask (B, T / (2k))."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    x = jax.nn.gelu(self.conv1(mels.astype(dt)), approximate=False)
    x = jax.nn.gelu(self.conv2(x), approximate=False)
    t = x.shape[1]
    if t > cfg.max_source_positions:
      raise ValueError(f"{mels.shape[1]} mel frames give {t} positions > max_source_positions "
                       f"{cfg.max_source_positions}; cut the audio into 30 s segments")
    x = x + self.embed_positions[:t].astype(dt)
    mask = mel_mask[:, ::2]
    allowed = block_causal_allowed(mask, cfg.block_size)
    x = scan_stack(self.layers, x, lambda layer, h: layer(h, allowed), 0, cfg.pooling_position)
    k = cfg.pooling_kernel_size
    x = jnp.pad(x, ((0, 0), (0, -t % k), (0, 0)))
    x = x.reshape(x.shape[0], -1, k, x.shape[-1]).mean(axis=2)
    mask = mask[:, ::k]
    if cfg.quantize_position > cfg.pooling_position:
      allowed = block_causal_allowed(mask, cfg.block_size // k)
      x = scan_stack(self.layers, x, lambda layer, h: layer(h, allowed), cfg.pooling_position, None)
    return x, mask.astype(jnp.int32)


_FORWARD = nnx.jit(lambda model, mels, mask: model(mels, mask))


def tokenize(model: WhisperVQEncoder, frontend, waves: list, sample_rate: int, *, segment_seconds: float = 30.0,
             batch_size: int = 128, max_seconds: float | None = None) -> list[list[int]]:
  """GLM-4-Voice `extract_speech_token`: waveforms -> one list of code ids per waveform.

  Each waveform is validated and resampled (BadAudioError on bad input), cut into `segment_seconds` pieces;
  pieces run in batches of `batch_size`, zero-padded to the longest in the batch (rounded up to
  frontend.pad_to_multiple_of samples); the codes under the mask are concatenated per waveform.
  frontend: an audio_frontend.WhisperFrontend.
  """
  from omnidiff_jax.models.speech_in.frontend import to_rate
  rate = frontend.sample_rate
  seg = int(segment_seconds * rate)
  segments, owners = [], []
  for i, w in enumerate(waves):
    w = to_rate(w, sample_rate, rate, max_seconds=max_seconds)
    for start in range(0, w.shape[0], seg):
      segments.append(w[start:start + seg])
      owners.append(i)
  codes: list[list[int]] = [[] for _ in waves]
  for start in range(0, len(segments), batch_size):
    mels, mel_mask = frontend(segments[start:start + batch_size], rate)
    ids, mask = jax.device_get(_FORWARD(model, mels, mel_mask))
    for row, owner in enumerate(owners[start:start + batch_size]):
      codes[owner].extend(ids[row][mask[row].astype(bool)].tolist())
  return codes
