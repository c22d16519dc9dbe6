"""Sampler features beyond upstream parity: batching, compile-once, inpainting, stochastic settings,
threshold decoding, the block KV cache and the penalties."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidiff_jax import sharding
from omnidiff_jax.sampling import SamplerConfig, generate, trace_count
from omnidiff_jax.sampling import logits as logits_lib
from omnidiff_jax.sampling import sampler as sampler_lib
from omnidiff_jax.vocab import VocabLayout


@pytest.fixture(scope="module")
def setup():
  """Tiny random model with weights scaled up so its confidences are well separated (no float ties)."""
  from configs import tiny
  cfg = tiny.get_config()
  model = sharding.create_model(cfg.model, seed=0)
  params = nnx.state(model, nnx.Param)
  scaled = jax.tree.map_with_path(
      lambda path, x: x * 6.0 if any(getattr(k, "key", None) in ("kernel", "embedding") for k in path) else x,
      params)
  nnx.update(model, scaled)
  return model, VocabLayout.from_config(cfg.vocab)


def _prompts(vocab, lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(0, vocab.text_size - 30, n)) for n in lengths]


def test_compiles_once_per_shape_and_config(setup):
  model, vocab = setup
  cfg = SamplerConfig(steps=6, alg="entropy", top_p=0.9)
  generate(model, cfg, vocab, prompt_ids=_prompts(vocab, [9])[0:1], region_len=12)
  before = trace_count()
  for seed in range(3):
    generate(model, cfg, vocab, prompt_ids=_prompts(vocab, [9], seed), region_len=12, seed=seed)
  assert trace_count() == before
  generate(model, SamplerConfig(steps=6, alg="maskgit_plus"), vocab, prompt_ids=_prompts(vocab, [9]),
           region_len=12)
  assert trace_count() == before + 1


def test_left_padded_batch_matches_single_rows(setup):
  model, vocab = setup
  cfg = SamplerConfig(steps=8, alg="entropy", top_p=0.9)
  prompts = _prompts(vocab, [5, 11], seed=1)
  batch = np.asarray(generate(model, cfg, vocab, prompt_ids=prompts, region_len=16).tokens)
  for row, prompt in enumerate(prompts):
    single = np.asarray(generate(model, cfg, vocab, prompt_ids=[prompt], region_len=16).tokens)
    np.testing.assert_array_equal(batch[row], single[0])
  assert (batch[0] != batch[1]).any()


def test_inpainting_keeps_known_image_tokens(setup):
  model, vocab = setup
  rng = np.random.default_rng(2)
  known = vocab.image_id(rng.integers(0, vocab.num_image_codes, (1, 16))).astype(np.int32)
  unknown = np.zeros(16, bool)
  unknown[[1, 2, 5, 6, 9, 10, 13]] = True  # a patch of the 4x4 code grid
  region = np.where(unknown, vocab.mask_id, known)
  cfg = SamplerConfig(steps=4, alg="entropy", top_p=0.9, block_size=8)
  out = generate(model, cfg, vocab, prompt_ids=_prompts(vocab, [7]), known_region=region)
  tokens = np.asarray(out.tokens)
  np.testing.assert_array_equal(tokens[0, ~unknown], known[0, ~unknown])
  assert (tokens != vocab.mask_id).all()
  # Both blocks hold unknown positions, each takes its 2 steps.
  assert int(out.steps) == 4
  # The generated tokens depend on the known context.
  other = np.where(unknown, vocab.mask_id, np.roll(known, 3))
  tokens2 = np.asarray(generate(model, cfg, vocab, prompt_ids=_prompts(vocab, [7]), known_region=other).tokens)
  assert (tokens2[0, unknown] != tokens[0, unknown]).any()


def test_fully_known_block_is_skipped(setup):
  model, vocab = setup
  region = np.full((1, 12), vocab.mask_id, np.int32)
  region[0, :6] = 5
  out = generate(model, SamplerConfig(steps=12, block_size=6), vocab, prompt_ids=_prompts(vocab, [4]),
                 known_region=region)
  assert int(out.full_forwards) == 6 and (np.asarray(out.tokens) != vocab.mask_id).all()


def test_boa_prefill_at_a_fifth(setup):
  model, vocab = setup
  boa = vocab.special_id("<|begin_of_audio|>")
  cfg = SamplerConfig(steps=5, boa_fraction=0.2)
  tokens = np.asarray(generate(model, cfg, vocab, prompt_ids=_prompts(vocab, [6]), region_len=30).tokens)
  assert tokens[0, 6] == boa


def test_temperature_sampling_follows_the_softmax(setup):
  model, vocab = setup
  cfg = SamplerConfig(steps=1, alg="maskgit_plus", temperature=1.5, top_k=4)
  prompt = np.asarray(_prompts(vocab, [6], seed=3), np.int32)
  draws = np.asarray(generate(model, cfg, vocab, prompt_ids=prompt.repeat(400, 0), region_len=1).tokens)[:, 0]
  counts = np.bincount(draws, minlength=vocab.size)
  ids = jnp.concatenate([jnp.asarray(prompt), jnp.full((1, 1), vocab.mask_id)], axis=1)
  logits = model(ids)[0, -2, :vocab.size].astype(jnp.float32) / 1.5
  want = np.asarray(jax.nn.softmax(logits_lib.top_k_filter(logits, 4)))
  assert np.count_nonzero(counts) <= 4
  assert 0.5 * np.abs(counts / counts.sum() - want).sum() < 0.1


def test_alg_temp_samples_positions_by_softmax_of_confidence():
  cfg = SamplerConfig(steps=4, alg="maskgit_plus", alg_temp=0.5)
  confidence = jnp.asarray([[0.1, 0.5, 0.3, 0.2]])
  candidates = jnp.asarray([[True, True, True, False]])
  t, s = jnp.float32(1.0), jnp.float32(0.6)  # k = floor(3 * 0.4) = 1
  keys = jax.random.split(jax.random.key(0), 4000)
  reveal = jax.vmap(lambda k: sampler_lib._select(cfg, candidates, confidence, confidence, t, s, False, k))(keys)
  assert (np.asarray(reveal).sum(axis=(1, 2)) == 1).all()
  freq = np.asarray(reveal)[:, 0].mean(0)
  want = np.asarray(jax.nn.softmax(jnp.asarray([0.1, 0.5, 0.3]) / 0.5))
  np.testing.assert_allclose(freq[:3], want, atol=0.03)
  assert freq[3] == 0


def test_origin_reveals_each_mask_with_probability_one_minus_s_over_t():
  cfg = SamplerConfig(steps=4, alg="origin")
  candidates = jnp.ones((1, 4000), bool).at[0, :100].set(False)
  t, s = jnp.float32(0.8), jnp.float32(0.6)
  reveal = np.asarray(sampler_lib._select(cfg, candidates, None, None, t, s, False, jax.random.key(1)))
  assert not reveal[0, :100].any()
  assert abs(reveal[0, 100:].mean() - 0.25) < 0.03
  assert np.asarray(sampler_lib._select(cfg, candidates, None, None, t, s, True, jax.random.key(1)))[0, 100:].all()


def test_threshold_decoding(setup):
  model, vocab = setup
  prompt = _prompts(vocab, [8], seed=4)
  # tau = 1 never passes: exactly the most confident position per step, i.e. the 1-per-step schedule.
  strict = generate(model, SamplerConfig(steps=16, alg="maskgit_plus", threshold=1.0), vocab, prompt_ids=prompt,
                    region_len=16)
  one_per_step = generate(model, SamplerConfig(steps=16, alg="maskgit_plus"), vocab, prompt_ids=prompt,
                          region_len=16)
  np.testing.assert_array_equal(np.asarray(strict.tokens), np.asarray(one_per_step.tokens))
  # A tiny tau reveals every position of a block in its first step.
  loose = generate(model, SamplerConfig(steps=16, alg="maskgit_plus", threshold=1e-9, block_size=4), vocab,
                   prompt_ids=prompt, region_len=16)
  assert int(loose.full_forwards) == 4 and (np.asarray(loose.tokens) != vocab.mask_id).all()


def test_cached_window_matches_full_forward_when_cache_is_fresh(setup):
  model, _ = setup
  rng = np.random.default_rng(5)
  ids = jnp.asarray(rng.integers(0, 200, (2, 20)), jnp.int32)
  segment_ids = jnp.asarray(np.concatenate([np.zeros((2, 3)), np.ones((2, 17))], 1).astype(np.int32))
  positions = jnp.broadcast_to(jnp.arange(20), (2, 20))
  embeds = model.embed(ids)
  hidden, kv = model.hidden_states_and_kv(embeds, positions, segment_ids)
  np.testing.assert_allclose(np.asarray(hidden), np.asarray(model.hidden_states(embeds, positions, segment_ids)),
                             atol=1e-5)
  window = model.hidden_states_cached(embeds[:, 9:15], positions[:, 9:15], jnp.int32(9), kv, segment_ids)
  np.testing.assert_allclose(np.asarray(window), np.asarray(hidden[:, 9:15]), atol=1e-5)


def test_kv_cache_counts_and_is_exact_for_one_layer(tiny_config):
  """With one layer the cached keys/values depend only on their own tokens, which do not change within a
  block, so the approximate cache must reproduce full decoding exactly; deeper models only approximate it."""
  tiny_config.model.num_layers = 1
  model = sharding.create_model(tiny_config.model, seed=3)
  vocab = VocabLayout.from_config(tiny_config.vocab)
  prompt = _prompts(vocab, [8], seed=6)
  cfg = SamplerConfig(steps=24, alg="entropy", top_p=0.9, block_size=8, kv_cache=True)
  out = generate(model, cfg, vocab, prompt_ids=prompt, region_len=24)
  assert int(out.full_forwards) == 3 and int(out.cached_forwards) == 21
  full = generate(model, dataclasses.replace(cfg, kv_cache=False), vocab, prompt_ids=prompt, region_len=24)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(full.tokens))
  assert int(full.full_forwards) == 24


def test_cfg_with_identical_prompts_equals_no_cfg(setup):
  model, vocab = setup
  prompt = _prompts(vocab, [9], seed=7)
  plain = np.asarray(generate(model, SamplerConfig(steps=6, top_p=0.9), vocab, prompt_ids=prompt,
                              region_len=12).tokens)
  cfg = SamplerConfig(steps=6, top_p=0.9, cfg_scale=2.0)  # region alignment (upstream's: parity tests)
  got = np.asarray(generate(model, cfg, vocab, prompt_ids=prompt, region_len=12, uncond_ids=prompt).tokens)
  np.testing.assert_array_equal(got, plain)
  shorter = np.asarray(generate(model, cfg, vocab, prompt_ids=prompt, region_len=12, uncond_ids=[prompt[0][:3]]
                                ).tokens)
  assert (shorter != plain).any()


def test_position_penalty_factors():
  masked = np.zeros((1, 150), bool)
  masked[0, 10:140] = True  # N = 130
  table = jnp.asarray(logits_lib.position_penalty_table(150, 2.0, 100))
  got = np.asarray(jax.jit(logits_lib.position_penalty_factors)(jnp.asarray(masked), table))[0, 10:140]
  j = np.arange(130)
  want = np.where(j < 100, 1.0, 1.0 + (j - 100) / 30 * 1.0).astype(np.float32)
  np.testing.assert_array_equal(got, want)
  masked[0, 90:] = False  # N = 80 <= 100: off
  assert (np.asarray(logits_lib.position_penalty_factors(jnp.asarray(masked), table)) == 1.0).all()


def test_repetition_penalty_marks_decoded_ids_only():
  region = jnp.asarray([[7, 9, 0, 7], [3, 9, 9, 9]])
  present = np.asarray(logits_lib.decoded_ids_present(region, 12, 9, exclude_zero=True))
  assert present[0].nonzero()[0].tolist() == [7] and present[1].nonzero()[0].tolist() == [3]
  penalised = logits_lib.ctrl_penalty(jnp.asarray([-2.0, 3.0]), 1.5)
  np.testing.assert_allclose(np.asarray(penalised), [-3.0, 2.0])


def test_recording_traces_each_iteration_without_changing_tokens(setup):
  model, vocab = setup
  cfg = SamplerConfig(steps=8, alg="entropy", block_size=4)
  prompts = _prompts(vocab, [6, 10], seed=5)
  plain = generate(model, cfg, vocab, prompt_ids=prompts, region_len=12)
  assert plain.trace is None
  with sampler_lib.recording() as record:
    traced = generate(model, cfg, vocab, prompt_ids=prompts, region_len=12)
  assert len(record) == 1 and not sampler_lib._RECORDINGS
  trace, steps = record[0], int(traced.steps)
  np.testing.assert_array_equal(np.asarray(traced.tokens), np.asarray(plain.tokens))
  np.testing.assert_array_equal(trace.region[steps - 1], np.asarray(plain.tokens))
  before = np.full((2, 12), vocab.mask_id)
  for t in range(steps):
    window = slice(trace.window_start[t], trace.window_start[t] + 4)
    revealed = before[:, window] != trace.region[t][:, window]
    assert (trace.region[t][:, window][revealed] == trace.x0[t][revealed]).all()
    assert (trace.margin[t] >= 0).all()
    for row in range(2):  # the most confident candidates are revealed
      kept = trace.candidates[t, row] & ~revealed[row]
      if kept.any() and revealed[row].any():
        assert trace.confidence[t, row][revealed[row]].min() >= trace.confidence[t, row][kept].max()
    before = trace.region[t]
