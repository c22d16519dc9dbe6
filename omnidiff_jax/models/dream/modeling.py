"""Dream / Omni-Diffusion backbone: a Qwen2-shaped transformer used bidirectionally, in Flax NNX.

Token embedding -> L x [RMSNorm -> GQA attention (RoPE, q/k/v bias) -> RMSNorm -> SwiGLU] -> RMSNorm
-> untied lm_head. Attention is full (no causal mask); packed rows get a block-diagonal mask from segment
ids and padding (segment id 0) is masked out of the keys. The logit at position i predicts token i+1
(Dream's shift); `shift_logits` gives the per-position logits the sampler and the loss use.

The decoder layers are stacked on a leading 'layers' axis (created with nnx.vmap) and applied with
jax.lax.scan over the split parameter state, wrapped in jax.checkpoint with the configured remat policy.

With `model.audio_projector` configured, the model also owns upstream's `audio_projection` (the speech-input
ResamplerProjector, omnidiff_jax.models.speech_in.adapter), trained with the backbone; `embed_with_audio` splices
its projection of precomputed (frozen) SenseVoice encoder features into the `<|context_of_audio|>` slots.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from flax.linen import with_logical_constraint
from jax.ad_checkpoint import checkpoint_name

from omnidiff_jax.config import padded_vocab_size
from omnidiff_jax.models.dream.attention import dot_product_attention
from omnidiff_jax.models.speech_in.adapter import AudioProjector, splice_features

Array = jax.Array

# Remat policy names (MaxText-like) -> policy for jax.checkpoint; None means no rematerialisation.
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "qkv_proj": jax.checkpoint_policies.save_only_these_names("query_proj", "key_proj", "value_proj"),
    "minimal": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "out_proj", "mlp_gate", "mlp_up"),
}


def _dtype(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def _init(cfg: ml_collections.ConfigDict, names: tuple[str | None, ...]):
  return nnx.with_partitioning(nnx.initializers.normal(cfg.initializer_range), names)


def _vocab_init(cfg: ml_collections.ConfigDict, names: tuple[str | None, ...], vocab_axis: int):
  """_init with the padding past vocab_size on `vocab_axis` zero, as in converted checkpoints. No gradient
  reaches the padding (never looked up, logits masked), so it stays zero through training and HF export."""
  normal = nnx.initializers.normal(cfg.initializer_range)

  def init(key, shape, dtype=jnp.float32):
    real = jax.lax.broadcasted_iota(jnp.int32, shape, vocab_axis) < cfg.vocab_size
    return jnp.where(real, normal(key, shape, dtype), jnp.zeros((), dtype))

  return nnx.with_partitioning(init, names)


class RMSNorm(nnx.Module):
  """Qwen2 RMSNorm: normalise in fp32, cast back to the input dtype, then scale. x: (..., D)."""

  def __init__(self, dim: int, eps: float, param_dtype: jnp.dtype):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))

  def __call__(self, x: Array) -> Array:
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * h.astype(x.dtype)


def rope_cos_sin(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """Default RoPE tables in fp32. positions: (B, L) int -> cos, sin: (B, L, head_dim)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """Rotate-half RoPE. x: (B, L, N, H); cos, sin: (B, L, H) fp32, cast to x's dtype as in HF."""
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def kv_heads_axis(num_kv_heads: int) -> str | None:
  """Logical axis of the k/v projections' output: 'kv_heads' (split over the tensor axis), or None (replicated)
  when the current mesh's tensor axis does not divide num_kv_heads (e.g. 4 kv heads, tensor=8). Replicating the
  kv heads when tensor > num_kv_heads (the usual tensor-parallel treatment of GQA) keeps every kv head whole on
  each device instead of splitting heads mid-way (which would be gathered again in every attention); under GQA
  the k/v projections are small (K/N of q's)."""
  mesh = jax.sharding.get_abstract_mesh()
  tensor = 1 if mesh.empty else mesh.shape.get("tensor", 1)
  return "kv_heads" if num_kv_heads % tensor == 0 else None


class Attention(nnx.Module):
  """Grouped-query self-attention with q/k/v bias and no o bias."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.head_dim
    kv_axis = kv_heads_axis(cfg.num_kv_heads)
    self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, h
    self.impl = cfg.attention_impl
    self.interpret = bool(cfg.get("attention_interpret", False))  # older stored configs lack the field
    kw = dict(dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype), rngs=rngs)
    bias_init = lambda names: nnx.with_partitioning(nnx.initializers.zeros_init(), names)
    self.q_proj = nnx.Linear(d, cfg.num_heads * h, use_bias=True, kernel_init=_init(cfg, ("embed", "q_heads")),
                             bias_init=bias_init(("q_heads",)), **kw)
    self.k_proj = nnx.Linear(d, cfg.num_kv_heads * h, use_bias=True, kernel_init=_init(cfg, ("embed", kv_axis)),
                             bias_init=bias_init((kv_axis,)), **kw)
    self.v_proj = nnx.Linear(d, cfg.num_kv_heads * h, use_bias=True, kernel_init=_init(cfg, ("embed", kv_axis)),
                             bias_init=bias_init((kv_axis,)), **kw)
    self.o_proj = nnx.Linear(cfg.num_heads * h, d, use_bias=False, kernel_init=_init(cfg, ("q_heads", "embed")),
                             **kw)

  def __call__(self, x: Array, cos: Array, sin: Array, segment_ids: Array | None) -> Array:
    """x: (B, L, D); cos, sin: (B, L, H); segment_ids: (B, L) (0 = padding) or None (full attention).

    Returns (B, L, D).
    """
    q, k, v = self.qkv(x, cos, sin)
    return self.attend(q, k, v, segment_ids)

  def qkv(self, x: Array, cos: Array, sin: Array) -> tuple[Array, Array, Array]:
    """Rotated queries (B, L, N, H) and keys, values (B, L, K, H)."""
    b, l, _ = x.shape
    q = checkpoint_name(self.q_proj(x), "query_proj").reshape(b, l, self.num_heads, self.head_dim)
    k = checkpoint_name(self.k_proj(x), "key_proj").reshape(b, l, self.num_kv_heads, self.head_dim)
    v = checkpoint_name(self.v_proj(x), "value_proj").reshape(b, l, self.num_kv_heads, self.head_dim)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q = with_logical_constraint(q, ("activation_batch", "activation_length", "activation_heads", None))
    return q, k, v

  def attend(self, q: Array, k: Array, v: Array, segment_ids: Array | None,
             kv_segment_ids: Array | None = None) -> Array:
    """q: (B, L, N, H); k, v: (B, S, K, H); segment_ids: (B, L) of the queries, kv_segment_ids: (B, S) of
    the keys (default: segment_ids; both None: full attention) -> (B, L, D)."""
    b, l = q.shape[:2]
    out = dot_product_attention(q, k, v, segment_ids, self.impl, kv_segment_ids, interpret=self.interpret)
    out = out.reshape(b, l, self.num_heads * self.head_dim)
    return checkpoint_name(self.o_proj(out), "out_proj")


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    kw = dict(use_bias=False, dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype), rngs=rngs)
    self.gate_proj = nnx.Linear(d, f, kernel_init=_init(cfg, ("embed", "mlp")), **kw)
    self.up_proj = nnx.Linear(d, f, kernel_init=_init(cfg, ("embed", "mlp")), **kw)
    self.down_proj = nnx.Linear(f, d, kernel_init=_init(cfg, ("mlp", "embed")), **kw)

  def __call__(self, x: Array) -> Array:
    gate = checkpoint_name(self.gate_proj(x), "mlp_gate")
    up = checkpoint_name(self.up_proj(x), "mlp_up")
    h = with_logical_constraint(jax.nn.silu(gate) * up, ("activation_batch", "activation_length", "activation_mlp"))
    return self.down_proj(h)


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    pdt = _dtype(cfg.param_dtype)
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pdt)
    self.self_attn = Attention(cfg, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pdt)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x: Array, cos: Array, sin: Array, segment_ids: Array | None) -> Array:
    x = x + self.self_attn(self.input_layernorm(x), cos, sin, segment_ids)
    x = x + self.mlp(self.post_attention_layernorm(x))
    return with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))

  def with_kv(self, x: Array, cos: Array, sin: Array, segment_ids: Array | None,
              cache: tuple[Array, Array, Array] | None = None,
              kv_segment_ids: Array | None = None) -> tuple[Array, tuple[Array, Array]]:
    """The layer, also returning this layer's keys and values (B, S, K, H).

    cache: None, or (keys, values, start) of the whole row (B, S, K, H) computed earlier; x is then the
    window of rows start .. start + L - 1, whose fresh keys/values replace the cached ones there, and its
    queries attend to all S rows. segment_ids: (B, L) of x's rows; kv_segment_ids: (B, S) of the keys.
    """
    q, k, v = self.self_attn.qkv(self.input_layernorm(x), cos, sin)
    if cache is not None:
      k_all, v_all, start = cache
      k = jax.lax.dynamic_update_slice_in_dim(k_all, k.astype(k_all.dtype), start, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(v_all, v.astype(v_all.dtype), start, axis=1)
    x = x + self.self_attn.attend(q, k, v, segment_ids, kv_segment_ids)
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, (k, v)


class DreamModel(nnx.Module):
  """The full backbone. Parameters of the decoder layers carry a leading (num_layers,) axis."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    cfg = ml_collections.FrozenConfigDict(cfg)  # hashable: part of the static graph definition
    self.cfg = cfg
    pdt, dt = _dtype(cfg.param_dtype), _dtype(cfg.dtype)
    if cfg.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {cfg.remat_policy!r}; choose one of {sorted(REMAT_POLICIES)}")
    vocab_rows = padded_vocab_size(cfg)  # >= vocab_size; the padding rows are masked out of the logits
    self.embed_tokens = nnx.Embed(vocab_rows, cfg.hidden_size, dtype=dt, param_dtype=pdt,
                                  embedding_init=_vocab_init(cfg, ("vocab", "embed"), 0), rngs=rngs)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=cfg.num_layers,
              transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs: nnx.Rngs) -> DecoderLayer:
      return DecoderLayer(cfg, rngs=rngs)

    self.layers = make_layers(rngs)
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pdt)
    self.lm_head = nnx.Linear(cfg.hidden_size, vocab_rows, use_bias=False, dtype=dt, param_dtype=pdt,
                              kernel_init=_vocab_init(cfg, ("embed", "vocab"), 1), rngs=rngs)
    # Built last, so the backbone's initialisation does not depend on whether it exists. Small and replicated
    # (no sharding annotations).
    projector = cfg.get("audio_projector")
    if projector is not None and projector.hidden_size != cfg.hidden_size:
      raise ValueError(f"model.audio_projector.hidden_size={projector.hidden_size} must equal "
                       f"model.hidden_size={cfg.hidden_size}")
    self.audio_projection = None if projector is None else AudioProjector(projector, rngs=rngs)

  def embed(self, input_ids: Array) -> Array:
    """input_ids: (B, L) int -> (B, L, D) in the compute dtype. Ids outside [0, vocab_size), the padding rows
    included, are out of range: NaN embeddings."""
    rows = self.embed_tokens.num_embeddings
    if rows != self.cfg.vocab_size:
      input_ids = jnp.where(input_ids < self.cfg.vocab_size, input_ids, rows)
    return self.embed_tokens(input_ids)

  def embed_with_audio(self, input_ids: Array, audio_features: Array, audio_slots: Array) -> Array:
    """Token embeddings with the projected user-speech features written into the audio slots.

    input_ids: (B, L) int; audio_features: (B, F, A) encoder outputs (A = audio_projector.input_size), the
    k-th row of a row's features for its k-th slot; audio_slots: (B, L) bool or 0/1 int, at most F per row.
    Returns (B, L, D) in the compute dtype.
    """
    if self.audio_projection is None:
      raise ValueError("this model has no audio projector (model.audio_projector is not configured)")
    return splice_features(self.embed(input_ids), self.audio_projection(audio_features), audio_slots)

  def hidden_states(self, inputs_embeds: Array, positions: Array, segment_ids: Array | None = None) -> Array:
    """Runs the decoder stack and the final norm.

    inputs_embeds: (B, L, D); positions: (B, L) int; segment_ids: (B, L) int, 0 = padding, None = one
    segment covering the row (full attention). Returns (B, L, D).
    """
    x, cos, sin = self._prepare(inputs_embeds, positions)
    graphdef, layer_state = nnx.split(self.layers)

    def body(h: Array, state) -> tuple[Array, None]:
      return nnx.merge(graphdef, state)(h, cos, sin, segment_ids), None

    policy = REMAT_POLICIES[self.cfg.remat_policy]
    if policy is not None:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    x, _ = jax.lax.scan(body, x, layer_state)
    return self.norm(x)

  def hidden_states_and_kv(self, inputs_embeds: Array, positions: Array, segment_ids: Array | None = None
                           ) -> tuple[Array, tuple[Array, Array]]:
    """hidden_states, plus every layer's rotated keys and values (num_layers, B, L, K, H) for a KV cache."""
    x, cos, sin = self._prepare(inputs_embeds, positions)
    graphdef, layer_state = nnx.split(self.layers)

    def body(h: Array, state) -> tuple[Array, tuple[Array, Array]]:
      return nnx.merge(graphdef, state).with_kv(h, cos, sin, segment_ids)

    x, kv = jax.lax.scan(body, x, layer_state)
    return self.norm(x), kv

  def hidden_states_cached(self, window_embeds: Array, window_positions: Array, start: Array,
                           kv: tuple[Array, Array], segment_ids: Array | None = None) -> Array:
    """Recomputes only a window of rows against cached keys/values of the others (approximate KV cache).

    window_embeds: (B, W, D) for rows start .. start + W - 1; window_positions: (B, W); start: int scalar;
    kv: keys, values (num_layers, B, S, K, H) from hidden_states_and_kv; segment_ids: (B, S) of the whole
    row or None (full attention). Returns (B, W, D): the window's hidden states, with the window's own
    keys/values fresh and all other rows' keys/values taken from the cache.
    """
    x, cos, sin = self._prepare(window_embeds, window_positions)
    window_segments = None
    if segment_ids is not None:
      window_segments = jax.lax.dynamic_slice_in_dim(segment_ids, start, x.shape[1], axis=1)
    graphdef, layer_state = nnx.split(self.layers)

    def body(h: Array, xs) -> tuple[Array, None]:
      state, k_all, v_all = xs
      layer = nnx.merge(graphdef, state)
      return layer.with_kv(h, cos, sin, window_segments, (k_all, v_all, start), segment_ids)[0], None

    x, _ = jax.lax.scan(body, x, (layer_state, *kv))
    return self.norm(x)

  def _prepare(self, inputs_embeds: Array, positions: Array) -> tuple[Array, Array, Array]:
    x = with_logical_constraint(inputs_embeds.astype(_dtype(self.cfg.dtype)),
                                ("activation_batch", "activation_length", "activation_embed"))
    cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
    return x, cos, sin

  def logits(self, hidden: Array) -> Array:
    """hidden: (B, L, D) -> unshifted logits (B, L, Vp) in the compute dtype, Vp = padded_vocab_size.

    The Vp - vocab_size padding columns hold the dtype's lowest finite value (the sampler's fill value; finite
    so that CFG's cond - uncond stays 0 there), whatever the padding weights: they get zero probability in
    the loss's softmax and are never sampled.
    """
    out = self.lm_head(hidden)
    if out.shape[-1] != self.cfg.vocab_size:
      real = jnp.arange(out.shape[-1]) < self.cfg.vocab_size
      out = jnp.where(real, out, jnp.finfo(out.dtype).min)
    return with_logical_constraint(out, ("activation_batch", "activation_length", "activation_vocab"))

  def __call__(self, input_ids: Array | None = None, *, inputs_embeds: Array | None = None,
               positions: Array | None = None, segment_ids: Array | None = None) -> Array:
    """Unshifted logits (B, L, Vp) (see `logits`): logit i predicts token i + 1.

    Give exactly one of input_ids (B, L) or inputs_embeds (B, L, D). positions default to arange(L).
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if inputs_embeds is None:
      inputs_embeds = self.embed(input_ids)
    b, l = inputs_embeds.shape[:2]
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    return self.logits(self.hidden_states(inputs_embeds, positions, segment_ids))


def shift_logits(logits: Array) -> Array:
  """Dream's shift: out[:, j] = logits[:, j - 1] (the prediction for token j); position 0 keeps its own.

  logits: (B, L, V) -> (B, L, V).
  """
  return jnp.concatenate([logits[:, :1], logits[:, :-1]], axis=1)

