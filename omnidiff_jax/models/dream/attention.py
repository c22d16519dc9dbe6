"""Bidirectional grouped-query attention kernels: XLA / cuDNN via jax.nn.dot_product_attention, and the
TPU Splash (Pallas) kernel.

All take q: (B, L, N, H), k and v: (B, S, K, H) with N a multiple of K (query head n uses kv head
n // (N // K), as HF's repeat_kv), segment_ids: (B, L) int of the queries where 0 marks padding and equal
non-zero ids attend to each other (None: one segment over the whole row), and optionally kv_segment_ids:
(B, S) of the keys when they differ from the queries' (a KV-cached window). They return (B, L, N, H).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from omnidiff_jax.platform import target_platform

Array = jax.Array

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
BLOCK_MULTIPLE = 128  # splash block sizes are multiples of this; lengths are padded to it


def attention_mask(segment_ids: Array, kv_segment_ids: Array | None = None) -> Array:
  """Block-diagonal mask over packed segments; segment id 0 is padding and never a key.

  segment_ids: (B, L), kv_segment_ids: (B, S) (default segment_ids) -> (B, 1, L, S) bool. Rows of padding
  queries are fully masked.
  """
  kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
  same = segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return (same & (kv_segment_ids[:, None, :] != 0))[:, None]


def dot_product_attention(q: Array, k: Array, v: Array, segment_ids: Array | None, impl: str,
                          kv_segment_ids: Array | None = None, *, interpret: bool = False) -> Array:
  """Scaled (1/sqrt(H)) softmax attention with the segment mask, by the chosen implementation.

  With 'xla' and 'cudnn' masked scores get a large finite negative value, so fully masked (padding) rows
  average the values instead of producing NaN. 'splash' pads both lengths to its block multiple (see
  splash_attention); `interpret` runs it in the Pallas interpreter (tests off TPU, model.attention_interpret).
  """
  if impl in ("xla", "cudnn"):
    mask = None if segment_ids is None else attention_mask(segment_ids, kv_segment_ids)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
  if impl == "splash":
    if segment_ids is None:
      segment_ids, kv_segment_ids = jnp.ones(q.shape[:2], jnp.int32), jnp.ones(k.shape[:2], jnp.int32)
    return splash_attention(q, k, v, segment_ids, kv_segment_ids, interpret=interpret)
  raise ValueError(f"unknown attention_impl {impl!r}; expected one of {IMPLEMENTATIONS}")


def check_splash_platform(platform: str, interpret: bool) -> None:
  """Splash compiles to a Mosaic kernel only for TPU; elsewhere it runs only in the interpreter, when asked."""
  if platform != "tpu" and not interpret:
    raise ValueError(f"attention_impl='splash' is a TPU kernel, but the target devices are {platform!r}: use "
                     "model.attention_impl='xla' (or 'cudnn' on GPU), or set model.attention_interpret=True to "
                     "run the Pallas interpreter (slow; for tests)")


def padded_length(length: int) -> int:
  """The length splash pads a sequence of `length` to: the next multiple of BLOCK_MULTIPLE."""
  return -(-length // BLOCK_MULTIPLE) * BLOCK_MULTIPLE


def _block(length: int) -> int:
  """Largest kernel block (512, 256 or 128) dividing a padded length."""
  return next(size for size in (512, 256, BLOCK_MULTIPLE) if length % size == 0)


def splash_attention(q: Array, k: Array, v: Array, segment_ids: Array, kv_segment_ids: Array | None = None, *,
                     interpret: bool = False) -> Array:
  """TPU Splash attention (full mask + segment ids), shard_mapped over (data, fsdp) x tensor when a mesh is set
  (rows replicated over (data, fsdp) when B does not divide them).

  Query and key lengths are padded to multiples of BLOCK_MULTIPLE with segment id 0 (padding: never a key of
  a real query) and the output is cut back to (B, L, N, H). Padding query rows attend to the other padding
  keys here (their outputs are unused). `interpret` runs the Pallas interpreter; without it, target devices
  other than TPU are an error (check_splash_platform), never a silent fallback.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  check_splash_platform(target_platform(), interpret)
  kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
  q_len, kv_len, head_dim = q.shape[1], k.shape[1], q.shape[3]
  q_pad, kv_pad = padded_length(q_len) - q_len, padded_length(kv_len) - kv_len
  pad = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2))
  q, segment_ids = pad(q, q_pad), pad(segment_ids, q_pad)
  k, v, kv_segment_ids = pad(k, kv_pad), pad(v, kv_pad), pad(kv_segment_ids, kv_pad)
  bq, bkv = _block(q_len + q_pad), _block(kv_len + kv_pad)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                        block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)

  def local(q, k, v, q_seg, kv_seg):
    heads, group = q.shape[2], q.shape[2] // k.shape[2]
    mask = sm.MultiHeadMask([sm.FullMask((q.shape[1], k.shape[1]))] * heads)
    kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)

    def one_row(q, k, v, qs, ks):  # (L, N, H) -> kernel layout (N, L, H)
      out = kernel((q * head_dim ** -0.5).swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1),
                   segment_ids=sk.SegmentIds(q=qs, kv=ks))
      return out.swapaxes(0, 1)

    return jax.vmap(one_row)(q, k, v, q_seg, kv_seg)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(q, k, v, segment_ids, kv_segment_ids)[:, :q_len]
  tensor = mesh.shape.get("tensor", 1)
  if q.shape[2] % tensor:
    raise ValueError(f"splash attention shards the {q.shape[2]} query heads over tensor={tensor}; choose a mesh "
                     f"whose tensor axis divides model.num_heads")
  if k.shape[2] % tensor:  # kv heads replicated (modeling.kv_heads_axis): each query head gets its kv head's copy
    k, v = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2), jnp.repeat(v, q.shape[2] // k.shape[2], axis=2)
  # Rows split over the batch axes; a batch smaller than them (sampling one prompt) is computed on every device.
  batch_axes = ("data", "fsdp") if q.shape[0] % (mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)) == 0 else None
  heads_spec, seg_spec = P(batch_axes, None, "tensor", None), P(batch_axes, None)
  sharded = jax.shard_map(local, mesh=mesh, out_specs=heads_spec,
                          in_specs=(heads_spec, heads_spec, heads_spec, seg_spec, seg_spec), check_vma=False)
  return sharded(q, k, v, segment_ids, kv_segment_ids)[:, :q_len]
