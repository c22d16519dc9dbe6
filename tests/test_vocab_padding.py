"""The vocabulary padded to model.vocab_pad_multiple rows: padding logits are never sampled nor scored, the
loss equals the unpadded model's, HF files keep vocab_size rows (round trip bit-equal, also for a vocabulary no
mesh axis divides, converted and loaded on tensor=8), and checkpoints stored unpadded still load."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.checkpoints import convert, load, orbax_io, safetensors_io
from omnidiff_jax.models.dream import params as hf_names
from omnidiff_jax.models.dream.modeling import DreamModel
from omnidiff_jax.sampling import SamplerConfig, generate
from omnidiff_jax.training import loss as losslib
from omnidiff_jax.training.config import add_training_sections
from omnidiff_jax.vocab import VocabLayout

torch_reference = pytest.importorskip("torch_reference")


def _tiny():
  from configs import tiny
  return tiny.get_config()


def _params(model) -> dict:
  return {path: var.get_value() for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _set_padding(model, fill) -> None:
  """Writes fill(shape) into the padding rows of the embedding and the padding columns of the lm_head."""
  v = model.cfg.vocab_size
  embed, head = model.embed_tokens.embedding, model.lm_head.kernel
  embed.set_value(embed.get_value().at[v:].set(fill(embed.get_value()[v:].shape)))
  head.set_value(head.get_value().at[:, v:].set(fill(head.get_value()[:, v:].shape)))


def _huge(seed):
  rng = np.random.default_rng(seed)
  return lambda shape: jnp.asarray(rng.normal(0, 1e3, shape), jnp.float32)


def test_padding_columns_hold_the_fill_value():
  cfg = _tiny()
  model = sharding.create_model(cfg.model, seed=0)
  assert cfglib.padded_vocab_size(cfg.model) == 384 and model.lm_head.kernel.get_value().shape == (128, 384)
  _set_padding(model, _huge(0))
  logits = np.asarray(model(jnp.arange(24, dtype=jnp.int32)[None]))
  assert (logits[..., 320:] == np.finfo(np.float32).min).all()
  assert np.isfinite(logits[..., :320]).all() and np.abs(logits[..., :320]).max() < 10


@pytest.mark.parametrize("sampler_cfg", [
    SamplerConfig(steps=6, alg="entropy", temperature=1.0, top_p=0.95),
    SamplerConfig(steps=6, alg="entropy-penalty", temperature=0.7, top_k=50, repetition_penalty=1.5,
                  position_penalty=2.0, position_window=2),
    SamplerConfig(steps=6, alg="maskgit_plus", temperature=0.0, mode="upstream"),
    SamplerConfig(steps=6, alg="topk_margin", temperature=1.0, cfg_scale=2.0),
], ids=["top_p", "penalties", "argmax_upstream", "cfg"])
def test_padded_rows_are_never_sampled(sampler_cfg):
  """Huge random padding weights (logits ~1e4 there, real ones < 10) change nothing: same tokens as zeros."""
  cfg = _tiny()
  vocab = VocabLayout.from_config(cfg.vocab)
  prompts = [[5, 9, 17, 33, 4], [60, 2, 8]]
  uncond = [[vocab.im_start_id]] if sampler_cfg.cfg_scale else None
  tokens = []
  for fill in (jnp.zeros, _huge(1)):
    model = sharding.create_model(cfg.model, seed=0)
    _set_padding(model, fill)
    result = generate(model, sampler_cfg, vocab, prompt_ids=prompts, region_len=20, uncond_ids=uncond, seed=3)
    tokens.append(np.asarray(result.tokens))
  assert tokens[0].max() < cfg.model.vocab_size
  np.testing.assert_array_equal(tokens[1], tokens[0])


def test_loss_equals_the_unpadded_models():
  cfg = add_training_sections(_tiny(), stage="test", learning_rate=1e-3, mixture={"t2i": 1.0}, steps=1,
                              global_rows=2, seq_len=64, warmup_steps=1)
  unpadded_cfg = ml_collections.ConfigDict(cfg.model.to_dict())
  unpadded_cfg.vocab_pad_multiple = 1
  unpadded, padded = sharding.create_model(unpadded_cfg, seed=4), sharding.create_model(cfg.model, seed=5)
  real = _params(unpadded)
  for path, var in nnx.to_flat_state(nnx.state(padded, nnx.Param)):
    name = next((n for n in hf_names.backbone_names() if n.path == path), None)
    var.set_value(jnp.asarray(hf_names.vocab_rows(name, np.asarray(real[path]), 384)) if name else real[path])
  _set_padding(padded, _huge(2))

  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, 320, (2, 64)), jnp.int32)
  labels = jnp.asarray(np.where(rng.random((2, 64)) < 0.7, rng.integers(0, 320, (2, 64)), -100), jnp.int32)
  masked = jnp.asarray(rng.random((2, 64)) < 0.5) & (labels != -100)
  t = jnp.full((2, 64), 0.5, jnp.float32)

  def loss(model):
    terms = losslib.diffusion_loss(model(ids), labels, masked, t, jnp.zeros((2, 64), jnp.int32), num_tasks=1,
                                   loss_cfg=cfg.loss)
    return terms.numerator / terms.denominator

  (want, grads_unpadded), (got, grads_padded) = (nnx.jit(nnx.value_and_grad(loss))(m) for m in (unpadded, padded))
  assert float(got) == float(want)  # measured: bit-equal (and so are the real gradients)
  head = np.asarray(grads_padded.lm_head.kernel.get_value())
  assert not head[:, 320:].any()  # the padding gets no gradient
  np.testing.assert_array_equal(head[:, :320], np.asarray(grads_unpadded.lm_head.kernel.get_value()))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_indivisible_vocab_converts_and_loads_on_tensor_8(tmp_path):
  """300 ids (300 % 8 = 4: unshardable over tensor=8 without padding) -> 384 rows; HF round trip bit-equal."""
  cfg = _tiny()
  cfg.vocab = cfglib.vocab_config(text_size=200, num_specials=0, num_audio_codes=0, num_image_codes=0, size=300)
  cfg.model.vocab_size = 300
  reference = torch_reference.random_qwen2(cfg.model, seed=1)
  reference.save_pretrained(tmp_path / "hf", max_shard_size="300KB")
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=8)))
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "ck", config=cfg, mesh=mesh, progress=False)
  assert orbax_io.array_shapes(tmp_path / "ck")[("params", "embed_tokens", "embedding")][0] == (384, 128)
  model, _ = load(tmp_path / "ck", mesh=mesh)
  head = model.lm_head.kernel.get_value()
  assert head.sharding.shard_shape(head.shape) == (128, 48)
  ids = np.random.default_rng(0).integers(0, 300, (2, 32), dtype=np.int32)
  with sharding.use_mesh(mesh):
    got = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(ids)))
  want = torch_reference.bidirectional_logits(reference, ids)
  assert np.abs(got[..., :300] - want).max() <= 1e-4  # as test_checkpoint_convert's fp32 parity bound
  convert.orbax_to_hf(tmp_path / "ck", tmp_path / "back", progress=False)
  before, after = (safetensors_io.HFCheckpoint(tmp_path / d).read_all() for d in ("hf", "back"))
  assert sorted(before) == sorted(after) and after["model.embed_tokens.weight"].shape == (300, 128)
  for key in before:
    assert before[key].dtype == after[key].dtype and before[key].tobytes() == after[key].tobytes(), key


def test_unpadded_checkpoint_still_loads(tmp_path):
  """A checkpoint written before the padding (vocab_size rows, no vocab_pad_multiple) loads zero-padded."""
  cfg = _tiny()
  old_cfg = ml_collections.ConfigDict(cfg.model.to_dict())
  old_cfg.vocab_pad_multiple = 1
  old = sharding.create_model(old_cfg, seed=6)
  stored = ml_collections.ConfigDict(dict(vocab=cfg.vocab, model=cfg.model)).to_dict()
  del stored["model"]["vocab_pad_multiple"]
  arrays = ((("params", *path), np.asarray(value)) for path, value in _params(old).items())
  orbax_io.write(tmp_path / "ck" / "0", arrays, dict(format=orbax_io.FORMAT, config=stored))
  model, _ = load(tmp_path / "ck")
  embed = np.asarray(model.embed_tokens.embedding.get_value())
  assert embed.shape == (384, 128) and not embed[320:].any()
  np.testing.assert_array_equal(embed[:320], np.asarray(old.embed_tokens.embedding.get_value()))
  ids = jnp.arange(16, dtype=jnp.int32)[None]
  # Only the lm_head matmul's width differs (384 vs 320 columns): measured max |diff| 1.8e-7.
  np.testing.assert_allclose(np.asarray(model(ids))[..., :320], np.asarray(old(ids)), atol=1e-6, rtol=0)


def test_omni_7b_shards_evenly_over_tensor_16():
  """The real shape on an abstract (1, 1, 16) mesh: 176,264 ids (IndivisibleError over 16 before the padding)
  become 176,384 rows, 11,024 per device; the 4 kv heads are replicated."""
  from configs import omni_7b
  cfg = omni_7b.get_config()
  mesh = jax.sharding.AbstractMesh((1, 1, 16), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with nnx.use_eager_sharding(False), jax.sharding.use_abstract_mesh(mesh), \
      nnx.logical_axis_rules(sharding.LOGICAL_RULES):
    state = nnx.state(nnx.eval_shape(lambda: DreamModel(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)
    shardings = dict(nnx.to_flat_state(nnx.get_named_sharding(state, mesh)))
  shards = {path: shardings[path].shard_shape(leaf.shape) for path, leaf in nnx.to_flat_state(state)}  # no raise
  assert shards[("embed_tokens", "embedding")] == (11_024, 3584) and shards[("lm_head", "kernel")] == (3584, 11_024)
  assert shards[("layers", "self_attn", "k_proj", "kernel")] == (28, 3584, 512)
