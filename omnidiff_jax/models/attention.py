"""Bidirectional grouped-query attention kernels: XLA / cuDNN via jax.nn.dot_product_attention, and the
TPU Splash (Pallas) kernel.

All take q: (B, L, N, H), k and v: (B, L, K, H) with N a multiple of K (query head n uses kv head
n // (N // K), as HF's repeat_kv), and segment_ids: (B, L) int where 0 marks padding and equal non-zero
ids attend to each other (None: one segment over the whole row). They return (B, L, N, H).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array

IMPLEMENTATIONS = ("xla", "cudnn", "splash")


def attention_mask(segment_ids: Array) -> Array:
  """Block-diagonal mask over packed segments; segment id 0 is padding and never a key.

  segment_ids: (B, L) int -> (B, 1, L, L) bool. Rows of padding queries are fully masked.
  """
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (same & (segment_ids[:, None, :] != 0))[:, None]


def dot_product_attention(q: Array, k: Array, v: Array, segment_ids: Array | None, impl: str) -> Array:
  """Scaled (1/sqrt(H)) softmax attention with the segment mask, by the chosen implementation.

  With 'xla' and 'cudnn' masked scores get a large finite negative value, so fully masked (padding) rows
  average the values instead of producing NaN.
  """
  if impl in ("xla", "cudnn"):
    mask = None if segment_ids is None else attention_mask(segment_ids)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
  if impl == "splash":
    if segment_ids is None:
      segment_ids = jnp.ones(q.shape[:2], jnp.int32)
    return splash_attention(q, k, v, segment_ids)
  raise ValueError(f"unknown attention_impl {impl!r}; expected one of {IMPLEMENTATIONS}")


def _block(length: int) -> int:
  for size in (512, 256, 128):
    if length % size == 0:
      return size
  raise ValueError(f"attention_impl='splash' needs a sequence length that is a multiple of 128, got {length}")


def splash_attention(q: Array, k: Array, v: Array, segment_ids: Array, *, interpret: bool | None = None) -> Array:
  """TPU Splash attention (full mask + segment ids), shard_mapped over (data, fsdp) x tensor when a mesh is set.

  `interpret` runs the Pallas kernel in the interpreter (default: whenever the backend is not TPU), which is
  how CPU tests check it. Padding query rows attend to the other padding keys here (their outputs are unused).
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  length, head_dim = q.shape[1], q.shape[3]
  blk = _block(length)
  sizes = sk.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                        block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)

  def local(q, k, v, seg):
    heads, group = q.shape[2], q.shape[2] // k.shape[2]
    kernel = sk.make_splash_mha(sm.MultiHeadMask([sm.FullMask((length, length))] * heads), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)

    def one_row(q, k, v, s):  # (L, N, H) -> kernel layout (N, L, H)
      out = kernel((q * head_dim ** -0.5).swapaxes(0, 1), k.swapaxes(0, 1), v.swapaxes(0, 1),
                   segment_ids=sk.SegmentIds(q=s, kv=s))
      return out.swapaxes(0, 1)

    return jax.vmap(one_row)(q, k, v, seg)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(q, k, v, segment_ids)
  tensor = mesh.shape.get("tensor", 1)
  if k.shape[2] % tensor:
    raise ValueError(f"splash attention shards kv heads over tensor={tensor}, but there are {k.shape[2]} kv heads")
  heads_spec = P(("data", "fsdp"), None, "tensor", None)
  sharded = jax.shard_map(functools.partial(local), mesh=mesh, out_specs=heads_spec,
                          in_specs=(heads_spec, heads_spec, heads_spec, P(("data", "fsdp"), None)), check_vma=False)
  return sharded(q, k, v, segment_ids)
