"""Batching in eval.generate does not change a sample's result: a row left-padded into a bucket batch gets the
logits it gets alone up to float rounding (the batch shape and the padded length change XLA's reduction orders),
and its random draws (token sampling, Gumbel reveal order, 'origin' reveals) come from its own seed, whatever its
batch mates, batch size or order: the same tokens as a batch-1 api.generate(seed=Request.seed) run.

The tiny random model's next-token distributions are nearly uniform: its entropy confidences lie a few float32
ulps apart (gaps of 0 to 4.8e-7 at the reveals that batching changed), so rounding alone reorders its reveals
(bench/RESULTS.md, "Eval generation"). The fixture sharpens them as training does (lm_head x SHARPEN) so that
token equality tests the batching, not the ties."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.eval.common import base_config
from omnidiff_jax import sharding
from omnidiff_jax.eval import generate as gen
from omnidiff_jax.eval import runner
from omnidiff_jax.sampling import api, sampler
from omnidiff_jax.sampling.schedule import SamplerConfig
from omnidiff_jax.vocab import VocabLayout

BUCKET = 16
GREEDY = SamplerConfig(steps=3, alg="entropy", top_p=0.9)
SAMPLING = SamplerConfig(steps=3, alg="entropy", temperature=1.0, alg_temp=0.5)  # categorical + Gumbel top-k
ORIGIN = SamplerConfig(steps=3, alg="origin", temperature=1.0)  # uniform reveal draws
SHARPEN = 10.0


@pytest.fixture(scope="module")
def setup():
  from configs import tiny
  cfg = tiny.get_config()
  vocab = VocabLayout.from_config(cfg.vocab)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  model = sharding.create_model(cfg.model, mesh, seed=0)
  model.lm_head.kernel.value = model.lm_head.kernel.value * SHARPEN
  rng = np.random.default_rng(0)
  prompts = [rng.integers(0, vocab.text_size, n).astype(np.int32) for n in (5, 9, 12, 16)]  # one bucket of 16
  return model, vocab, mesh, prompts


def _requests(prompts, cfg, region_len=6):
  return [gen.Request(ids=ids, cfg=cfg, region_len=region_len, seed=gen.sample_seed(0, f"sample-{i}"))
          for i, ids in enumerate(prompts)]


def _alone(model, vocab, request):
  """A batch-1 api.generate run of one request (unpadded prompt, the request's seed): upstream's eval loop."""
  return np.asarray(api.generate(model, request.cfg, vocab, prompt_ids=[request.ids.tolist()],
                                 region_len=request.region_len, seed=request.seed).tokens)[0]


def test_padded_row_gets_the_logits_it_gets_alone(setup):
  model, vocab, mesh, prompts = setup
  region_len = 6

  def region_logits(ids_list, padded_len, pads_visible=False):  # (B, G, V) first-step logits, all-mask region
    embeds, mask = api.embed_prompts(model, ids_list, vocab.pad_id)
    pad = padded_len - embeds.shape[1]
    rows = sampler.build_rows(model, jnp.pad(embeds, ((0, 0), (pad, 0), (0, 0))), np.pad(mask, ((0, 0), (pad, 0))),
                              region_len, GREEDY)
    if pads_visible:  # what a batch without the pad mask and real-token positions would compute
      rows = rows.replace(positions=jnp.broadcast_to(jnp.arange(rows.positions.shape[1]), rows.positions.shape),
                          segment_ids=None)
    region = jnp.full((len(ids_list), region_len), vocab.mask_id)
    logits = forward(sampler._row_embeds(model, rows, region, len(ids_list)), rows.positions, rows.segment_ids)
    return np.asarray(logits[:, padded_len - 1:padded_len - 1 + region_len, :vocab.size])

  @jax.jit  # as inside the sampler's compiled loop
  def forward(embeds, positions, segment_ids):
    return model.logits(model.hidden_states(embeds, positions, segment_ids)).astype(jnp.float32)

  with sharding.use_mesh(mesh):
    batch = region_logits(prompts, BUCKET)
    alone_padded = np.concatenate([region_logits([ids], BUCKET) for ids in prompts])
    alone = np.concatenate([region_logits([ids], len(ids)) for ids in prompts])
    visible = region_logits(prompts, BUCKET, pads_visible=True)
  # Measured max |diff| 5.2e-6 both ways, logits up to 7.8 in magnitude (6.7e-7 relative).
  np.testing.assert_allclose(batch, alone_padded, rtol=0, atol=2e-5)
  np.testing.assert_allclose(batch, alone, rtol=0, atol=2e-5)
  # Padding the model could see (shifted positions, pads attended to) moves the padded rows' logits by 3.2-5.1.
  assert (np.abs(visible - alone).max(axis=(1, 2))[:3] > 1.0).all()  # the 4th prompt fills the bucket: no pads


@pytest.mark.parametrize("cfg", [GREEDY, SAMPLING, ORIGIN], ids=["greedy", "sampling", "origin"])
def test_rows_sample_as_alone_in_any_batch(setup, cfg):
  model, vocab, mesh, prompts = setup
  requests = _requests(prompts, cfg)
  batched, _, stats = gen.generate(model, vocab, mesh, requests, batch_size=4, prompt_bucket=BUCKET)
  assert stats.batches == 1
  with sharding.use_mesh(mesh):
    alone = [_alone(model, vocab, r) for r in requests]  # the batch-1 loop: unpadded prompts
  for got, want in zip(batched, alone):
    np.testing.assert_array_equal(got, want)
  # Other batch mates, order and batch size: the same tokens per sample.
  order = [2, 0, 3, 1]
  pairs, _, stats = gen.generate(model, vocab, mesh, [requests[i] for i in order], batch_size=2, prompt_bucket=BUCKET)
  assert stats.batches == 2
  for i, got in zip(order, pairs):
    np.testing.assert_array_equal(got, alone[i])
  if cfg != GREEDY:  # the seed is what the randomness depends on
    reseeded = [gen.Request(ids=r.ids, cfg=cfg, region_len=r.region_len, seed=r.seed + 1) for r in requests]
    other, _, _ = gen.generate(model, vocab, mesh, reseeded, batch_size=4, prompt_bucket=BUCKET)
    assert any(not np.array_equal(a, b) for a, b in zip(other, batched))


def test_sample_seed_depends_on_the_eval_seed_and_the_sample_id_only():
  assert gen.sample_seed(0, "a") == gen.sample_seed(0, "a")
  seeds = {gen.sample_seed(s, i) for s in (0, 1) for i in ("a", "b", "c")}
  assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)


def test_upstream_mode_needs_batch_1():
  cfg = base_config()
  cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root="/data/mme"))
  cfg.settings = [dict(name="parity", mode="upstream")]
  with pytest.raises(ValueError, match=r"setting 'parity': mode='upstream' ranks the reveals over the whole batch.*"
                                       r"--config\.batch_size=1 --config\.mesh\.data=1"):
    runner.check_config(cfg)
  cfg.batch_size = 1
  runner.check_config(cfg)
