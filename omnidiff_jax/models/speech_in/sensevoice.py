"""SenseVoiceSmall encoder (FunASR SenseVoiceEncoderSmall + the 4 prepended query embeddings), Flax NNX.

Frozen in Omni-Diffusion: it turns the 560-d LFR fbank frames of user speech into 512-d features that the
projector (audio_adapter.py) maps into the backbone's embedding space.

Forward (`SenseVoiceEncoder.__call__`, = SenseVoiceSmall.inference_encode with language 'auto', woitn):
  rows [embed[lid], embed[1], embed[2], embed[textnorm]] + feats           (B, T + 4, input_size)
  x *= sqrt(output_size); x += sinusoidal PE (positions 1.., concat[sin | cos], depth = input_size)
  encoders0 (1 SAN-M layer, input_size -> d, no attention residual) -> encoders (num_blocks - 1)
  -> after_norm -> tp_encoders (tp_blocks) -> tp_norm                     (B, T + 4, d)
SAN-M layer (pre-LN, LayerNorm in fp32 with eps 1e-5):
  x = x + attn(norm1(x)) [no residual when in != out];  x = x + w_2(relu(w_1(norm2(x))))
  attn(h) = MHA(q, k, v) + FSMN(v), with q|k|v = linear_q_k_v(h), padding keys masked, and
  FSMN(v) = (depthwise_conv_k(v * m) + v * m) * m, zero-padded ((k-1)//2 + shift, rest).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from omnidiff_jax.models.layer_stack import make_stack, scan_stack

Array = jax.Array
NUM_QUERY_EMBEDDINGS = 16   # 7 + 7 language ids + 2 text-norm ids
EVENT_EMOTION_IDS = (1, 2)


class FP32LayerNorm(nnx.Module):
  """torch LayerNorm computed in fp32 and cast back (FunASR's LayerNorm). x: (..., D)."""

  def __init__(self, dim: int, eps: float = 1e-5):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

  def __call__(self, x: Array) -> Array:
    h = x.astype(jnp.float32)
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return h.astype(x.dtype)


class SanmAttention(nnx.Module):
  """MultiHeadedAttentionSANM: MHA plus the FSMN memory block on v."""

  def __init__(self, cfg: ml_collections.ConfigDict, in_dim: int, *, rngs: nnx.Rngs):
    d, dt = cfg.output_size, jnp.dtype(cfg.dtype)
    self.num_heads, self.head_dim = cfg.attention_heads, d // cfg.attention_heads
    self.linear_q_k_v = nnx.Linear(in_dim, 3 * d, dtype=dt, rngs=rngs)
    self.linear_out = nnx.Linear(d, d, dtype=dt, rngs=rngs)
    left = (cfg.kernel_size - 1) // 2 + cfg.sanm_shift
    self.fsmn_block = nnx.Conv(d, d, kernel_size=(cfg.kernel_size,), feature_group_count=d, use_bias=False,
                               padding=[(left, cfg.kernel_size - 1 - left)], dtype=dt, rngs=rngs)

  def __call__(self, x: Array, mask: Array) -> Array:
    """x: (B, T, in); mask: (B, T) 1 = valid frame. Returns (B, T, d)."""
    b, t, _ = x.shape
    q, k, v = jnp.split(self.linear_q_k_v(x), 3, axis=-1)
    m = mask[..., None].astype(x.dtype)
    memory = (self.fsmn_block(v * m) + v * m) * m
    heads = lambda a: a.reshape(b, t, self.num_heads, self.head_dim)
    scores = jnp.einsum("bqhd,bkhd->bhqk", heads(q) * self.head_dim ** -0.5, heads(k))
    key_ok = mask[:, None, None, :].astype(bool)
    probs = jax.nn.softmax(jnp.where(key_ok, scores, -jnp.inf), axis=-1)
    probs = jnp.where(key_ok, probs, 0.0).astype(x.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, heads(v)).reshape(b, t, -1)
    return self.linear_out(out) + memory


class SanmLayer(nnx.Module):
  """EncoderLayerSANM (normalize_before=True, concat_after=False)."""

  def __init__(self, cfg: ml_collections.ConfigDict, in_dim: int, *, rngs: nnx.Rngs):
    d, dt = cfg.output_size, jnp.dtype(cfg.dtype)
    self.residual = in_dim == d
    self.norm1 = FP32LayerNorm(in_dim)
    self.self_attn = SanmAttention(cfg, in_dim, rngs=rngs)
    self.norm2 = FP32LayerNorm(d)
    self.w_1 = nnx.Linear(d, cfg.linear_units, dtype=dt, rngs=rngs)
    self.w_2 = nnx.Linear(cfg.linear_units, d, dtype=dt, rngs=rngs)

  def __call__(self, x: Array, mask: Array) -> Array:
    attn = self.self_attn(self.norm1(x), mask)
    x = x + attn if self.residual else attn
    return x + self.w_2(jax.nn.relu(self.w_1(self.norm2(x))))


def sinusoidal_positions(length: int, depth: int) -> Array:
  """FunASR SinusoidalPositionEncoder: positions 1..length, concat[sin | cos]. Returns (length, depth) fp32."""
  inv = jnp.exp(jnp.arange(depth // 2, dtype=jnp.float32) * -(math.log(10000.0) / (depth / 2 - 1)))
  scaled = jnp.arange(1, length + 1, dtype=jnp.float32)[:, None] * inv[None, :]
  return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=-1)


class SenseVoiceEncoder(nnx.Module):
  """SenseVoiceSmall's query embeddings + SenseVoiceEncoderSmall. See the module docstring."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    cfg = ml_collections.FrozenConfigDict(cfg)
    self.cfg = cfg
    self.embed = nnx.Embed(NUM_QUERY_EMBEDDINGS, cfg.input_size, rngs=rngs)
    self.encoders0 = SanmLayer(cfg, cfg.input_size, rngs=rngs)
    self.encoders = make_stack(lambda r: SanmLayer(cfg, cfg.output_size, rngs=r), cfg.num_blocks - 1, rngs)
    self.after_norm = FP32LayerNorm(cfg.output_size)
    self.tp_encoders = make_stack(lambda r: SanmLayer(cfg, cfg.output_size, rngs=r), cfg.tp_blocks, rngs)
    self.tp_norm = FP32LayerNorm(cfg.output_size)

  def __call__(self, feats: Array, lengths: Array) -> tuple[Array, Array]:
    """feats: (B, T, input_size) right-padded LFR frames; lengths: (B,) valid frames.

    Returns features (B, T + 4, output_size) in cfg.dtype and their lengths (B,) = lengths + 4.
    """
    cfg = self.cfg
    b, t, _ = feats.shape
    dt = jnp.dtype(cfg.dtype)
    ids = jnp.asarray([cfg.language_id, *EVENT_EMOTION_IDS, cfg.textnorm_id], jnp.int32)
    queries = jnp.broadcast_to(self.embed(ids), (b, len(ids), cfg.input_size))
    x = jnp.concatenate([queries.astype(dt), feats.astype(dt)], axis=1)
    lengths = lengths + len(ids)
    mask = (jnp.arange(t + len(ids))[None, :] < lengths[:, None]).astype(dt)
    x = x * cfg.output_size ** 0.5 + sinusoidal_positions(t + len(ids), cfg.input_size).astype(dt)
    x = self.encoders0(x, mask)
    x = scan_stack(self.encoders, x, lambda layer, h: layer(h, mask))
    x = self.after_norm(x)
    x = scan_stack(self.tp_encoders, x, lambda layer, h: layer(h, mask))
    return self.tp_norm(x), lengths


_FORWARD = nnx.jit(lambda model, feats, lengths: model(feats, lengths))


FRAME_BUCKET = 64   # frames are zero-padded to a multiple of this: one compile per bucket, not per clip length


def pad_rows(x: np.ndarray, bucket: int = FRAME_BUCKET) -> np.ndarray:
  """(T, D) -> (ceil(T / bucket) * bucket, D) float32, zero rows after the first T (padded in numpy, so no
  compile per length)."""
  padded = np.zeros((-(-x.shape[0] // bucket) * bucket, x.shape[1]), np.float32)
  padded[:x.shape[0]] = x
  return padded


def encode_features(encoder: SenseVoiceEncoder, feats: list, bucket: int = FRAME_BUCKET) -> list:
  """Runs LFR feature arrays [(T_i, input_size)] one at a time -> [(T_i + 4, output_size) float32 numpy].

  Frames are zero-padded to a multiple of `bucket` (fewer recompiles); padding never changes valid rows
  (padded keys are masked, the FSMN input is masked).
  """
  out = []
  for f in feats:
    t = f.shape[0]
    x, lengths = _FORWARD(encoder, jnp.asarray(pad_rows(np.asarray(f), bucket)[None]), jnp.asarray([t], jnp.int32))
    out.append(jax.device_get(x[0, :int(lengths[0])]).astype("float32"))
  return out
