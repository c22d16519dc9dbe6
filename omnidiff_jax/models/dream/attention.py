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

Array = jax.Array

IMPLEMENTATIONS = ("xla", "cudnn", "splash")


def attention_mask(segment_ids: Array, kv_segment_ids: Array | None = None) -> Array:
  """Block-diagonal mask over packed segments; segment id 0 is padding and never a key.

  segment_ids: (B, L), kv_segment_ids: (B, S) (default segment_ids) -> (B, 1, L, S) bool. Rows of padding
  queries are fully masked.
  """
  kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
  same = segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return (same & (kv_segment_ids[:, None, :] != 0))[:, None]


def dot_product_attention(q: Array, k: Array, v: Array, segment_ids: Array | None, impl: str,
                          kv_segment_ids: Array | None = None) -> Array:
  """Scaled (1/sqrt(H)) softmax attention with the segment mask, by the chosen implementation.

  With 'xla' and 'cudnn' masked scores get a large finite negative value, so fully masked (padding) rows
  average the values instead of producing NaN.
  """
  if impl in ("xla", "cudnn"):
    mask = None if segment_ids is None else attention_mask(segment_ids, kv_segment_ids)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
  if impl == "splash":
    if segment_ids is None:
      segment_ids, kv_segment_ids = jnp.ones(q.shape[:2], jnp.int32), jnp.ones(k.shape[:2], jnp.int32)
    return splash_attention(q, k, v, segment_ids, kv_segment_ids)
  raise ValueError(f"unknown attention_impl {impl!r}; expected one of {IMPLEMENTATIONS}")


def _block(length: int) -> int:
  for size in (512, 256, 128):
    if length % size == 0:
      return size
  raise ValueError(f"attention_impl='splash' needs a sequence length that is a multiple of 128, got {length}")


def splash_attention(q: Array, k: Array, v: Array, segment_ids: Array, kv_segment_ids: Array | None = None, *,
                     interpret: bool | None = None) -> Array:
  """TPU Splash attention (full mask + segment ids), shard_mapped over (data, fsdp) x tensor when a mesh is set.

  `interpret` runs the Pallas kernel in the interpreter (default: whenever the backend is not TPU), which is
  how CPU tests check it. Padding query rows attend to the other padding keys here (their outputs are unused).
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
  q_len, kv_len, head_dim = q.shape[1], k.shape[1], q.shape[3]
  bq, bkv = _block(q_len), _block(kv_len)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                        block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)

  def local(q, k, v, q_seg, kv_seg):
    heads, group = q.shape[2], q.shape[2] // k.shape[2]
    kernel = sk.make_splash_mha(sm.MultiHeadMask([sm.FullMask((q_len, kv_len))] * heads), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)

    def one_row(q, k, v, qs, ks):  # (L, N, H) -> kernel layout (N, L, H)
      out = kernel((q * head_dim ** -0.5).swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1),
                   segment_ids=sk.SegmentIds(q=qs, kv=ks))
      return out.swapaxes(0, 1)

    return jax.vmap(one_row)(q, k, v, q_seg, kv_seg)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(q, k, v, segment_ids, kv_segment_ids)
  tensor = mesh.shape.get("tensor", 1)
  if q.shape[2] % tensor:
    raise ValueError(f"splash attention shards the {q.shape[2]} query heads over tensor={tensor}; choose a mesh "
                     f"whose tensor axis divides model.num_heads")
  if k.shape[2] % tensor:  # kv heads replicated (modeling.kv_heads_axis): each query head gets its kv head's copy
    k, v = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2), jnp.repeat(v, q.shape[2] // k.shape[2], axis=2)
  heads_spec, seg_spec = P(("data", "fsdp"), None, "tensor", None), P(("data", "fsdp"), None)
  sharded = jax.shard_map(local, mesh=mesh, out_specs=heads_spec,
                          in_specs=(heads_spec, heads_spec, heads_spec, seg_spec, seg_spec), check_vma=False)
  return sharded(q, k, v, segment_ids, kv_segment_ids)
