"""Attention implementations agree: Splash (Pallas, run in interpret mode on CPU) vs XLA."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from omnidiff_jax import platform, sharding
from omnidiff_jax.models.dream import attention


def _qkv(b=2, l=128, n=4, k=2, h=32):
  rng = np.random.default_rng(0)
  mk = lambda heads: jnp.asarray(rng.normal(size=(b, l, heads, h)), jnp.float32)
  return mk(n), mk(k), mk(k)


def test_fully_masked_rows_are_finite():
  q, k, v = _qkv()
  seg = jnp.zeros((2, 128), jnp.int32).at[:, :10].set(1)
  out = attention.dot_product_attention(q, k, v, seg, "xla")
  assert np.isfinite(np.asarray(out)).all()


def test_splash_matches_xla_with_segments_and_padding():
  q, k, v = _qkv()
  seg = jnp.asarray(np.array([[1] * 70 + [2] * 40 + [0] * 18, [1] * 128]), jnp.int32)
  want = np.asarray(attention.dot_product_attention(q, k, v, seg, "xla"))
  got = np.asarray(jax.jit(functools.partial(attention.splash_attention, interpret=True))(q, k, v, seg))
  valid = np.asarray(seg) != 0
  np.testing.assert_allclose(got[valid], want[valid], atol=5e-6, rtol=0)  # measured 6.6e-7 (outputs up to 1.5)


@pytest.mark.parametrize("segments", [True, False])
def test_splash_pads_lengths_that_are_not_block_multiples(segments):
  """Queries of 70 rows against 200 keys (a KV-cached window): padded to 128 / 256 inside, cut back."""
  q, _, _ = _qkv(l=70)
  _, k, v = _qkv(l=200)
  seg = kv_seg = None
  if segments:
    seg = jnp.asarray(np.array([[1] * 50 + [2] * 20, [1] * 70]), jnp.int32)
    kv_seg = jnp.asarray(np.array([[1] * 120 + [2] * 60 + [0] * 20, [1] * 200]), jnp.int32)
  want = np.asarray(attention.dot_product_attention(q, k, v, seg, "xla", kv_seg))
  splash = functools.partial(attention.dot_product_attention, impl="splash", interpret=True)
  got = np.asarray(jax.jit(splash)(q, k, v, seg, kv_segment_ids=kv_seg))
  assert got.shape == want.shape == (2, 70, 4, 32)
  np.testing.assert_allclose(got, want, atol=5e-6, rtol=0)  # measured 5.4e-7 (segments), 4.0e-7 (none)


def test_splash_off_tpu_without_interpret_is_an_error():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="attention_interpret=True"):
    jax.jit(attention.splash_attention)(q, k, v, jnp.ones((2, 128), jnp.int32))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_splash_model_on_mesh_matches_xla_forward_and_grad(tiny_config):
  cfg_x = tiny_config.model
  cfg_s = cfg_x.copy_and_resolve_references()
  cfg_s.attention_impl, cfg_s.attention_interpret = "splash", True
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
  ids = jnp.asarray(np.random.default_rng(1).integers(0, cfg_x.vocab_size, (4, 128)), jnp.int32)

  def loss(model):
    return jnp.mean(model(ids)[..., :cfg_x.vocab_size] ** 2)  # the padded vocabulary's logits are the fill value

  results = []
  for cfg in (cfg_x, cfg_s):
    model = sharding.create_model(cfg, mesh, seed=2)
    with sharding.use_mesh(mesh):
      results.append(nnx.jit(nnx.value_and_grad(loss))(model))
  (lx, gx), (ls, gs) = results
  np.testing.assert_allclose(float(ls), float(lx), rtol=2e-7)  # measured 0 (bit-equal); a float32 ulp is 1.2e-7
  for a, b in zip(jax.tree.leaves(gx), jax.tree.leaves(gs)):
    # Per leaf, max |diff| / max |grad| measured 1.1e-7 .. 8.1e-7 (largest gradient 1.4e-2, largest diff 2.3e-9).
    a = np.asarray(a)
    np.testing.assert_allclose(np.asarray(b), a, rtol=0, atol=4e-6 * np.abs(a).max())


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_splash_with_kv_heads_replicated_over_tensor():
  """4 query heads, 2 kv heads, tensor=4: each device's query head gets a copy of its kv head."""
  q, k, v = _qkv()
  seg = jnp.asarray(np.array([[1] * 100 + [0] * 28, [1] * 128]), jnp.int32)
  want = np.asarray(attention.dot_product_attention(q, k, v, seg, "xla"))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, tensor=4)))
  with sharding.use_mesh(mesh):
    got = np.asarray(jax.jit(functools.partial(attention.splash_attention, interpret=True))(q, k, v, seg))
  valid = np.asarray(seg) != 0
  np.testing.assert_allclose(got[valid], want[valid], atol=5e-6, rtol=0)  # measured 6.6e-7 (outputs up to 0.92)
  with sharding.use_mesh(sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=8)))):
    with pytest.raises(ValueError, match="4 query heads over tensor=8"):
      jax.jit(functools.partial(attention.splash_attention, interpret=True))(q, k, v, seg)


def test_target_platform_is_the_mesh_devices_platform_under_jit():
  """A TPU topology compiled on a CPU host: the abstract mesh's device description names the platform."""
  tpu = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")
  mesh = jax.sharding.AbstractMesh((1,), ("tensor",), abstract_device=tpu)
  seen = []

  def record(x):
    seen.append(platform.target_platform())
    return x

  with jax.sharding.use_abstract_mesh(mesh):
    jax.jit(record).trace(jax.ShapeDtypeStruct((2,), jnp.float32))
  assert seen == ["tpu"]
  assert platform.target_platform() == jax.default_backend() == "cpu"
