"""Token-identical parity of the jitted sampler (mode='upstream') with the PyTorch transcription of upstream's loop
(tests/sampler_reference.py), both driving the same random tiny model, at temperature 0 and alg_temp 0; and
tests that show each deliberate difference of the default mode."""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("torch_reference")
sampler_reference = pytest.importorskip("sampler_reference")

from omnidiff_jax import sharding  # noqa: E402
from omnidiff_jax.models.dream import params as hf_names  # noqa: E402
from omnidiff_jax.sampling import SamplerConfig, generate, linspace_timesteps, splice_features  # noqa: E402
from omnidiff_jax.sampling import api, sampler  # noqa: E402
from omnidiff_jax.sampling import logits as logits_lib  # noqa: E402
from omnidiff_jax.vocab import VocabLayout  # noqa: E402


def _pair(ref):
  from configs import tiny
  cfg = tiny.get_config()
  ours = sharding.create_model(cfg.model, seed=1)
  hf_names.load_backbone(ours, torch_reference.state_dict_numpy(ref).__getitem__)
  return ref, ours, VocabLayout.from_config(cfg.vocab)


@pytest.fixture(scope="module")
def models():
  from configs import tiny
  return _pair(sampler_reference.sharpen(torch_reference.random_qwen2(tiny.get_config().model, seed=0)))


@pytest.fixture(scope="module")
def biased_models(models):
  """The same model with the lm_head rows of id 0 and the mask id raised, so that both get predicted."""
  ref = copy.deepcopy(models[0])
  vocab = models[2]
  with torch.no_grad():
    for token, scale in ((0, 1.6), (vocab.mask_id, 1.6)):
      ref.lm_head.weight[token] = ref.lm_head.weight[token] * scale + 0.1 * ref.lm_head.weight.mean(0)
  return _pair(ref)


def _prompt(seed, length, vocab):
  return np.random.default_rng(seed).integers(0, vocab.text_size - 30, (1, length)).astype(np.int32)


def _reference(ref, vocab, prompt_ids, region_len, settings, uncond_ids=None, prompt_embeds=None):
  if prompt_embeds is None:
    prompt_embeds = ref.get_input_embeddings()(torch.as_tensor(prompt_ids, dtype=torch.long))
  out = sampler_reference.generate(
      ref, prompt_embeds, region_len, settings, mask_token_id=vocab.mask_id,
      boa_id=vocab.special_id("<|begin_of_audio|>"), un_x=None if uncond_ids is None else uncond_ids[0].tolist())
  return out.numpy()


def _ours(settings: "sampler_reference.ReferenceSettings", **overrides) -> SamplerConfig:
  fields = dict(
      steps=settings.steps, alg=settings.alg, temperature=settings.temperature, top_p=settings.top_p,
      top_k=settings.top_k, eps=settings.eps, block_size=None if settings.block_size < 0 else settings.block_size,
      repetition_penalty=settings.repeat_penalty, position_penalty=settings.max_position_penalty,
      boa_fraction=0.2 if settings.add_boa_token else None, cfg_scale=settings.cfg, cfg_alignment="upstream",
      mode="upstream")
  return SamplerConfig(**dict(fields, **overrides))


def _generate(model, cfg, vocab, prompt, region_len, **kwargs):
  return np.asarray(generate(model, cfg, vocab, prompt_ids=prompt, region_len=region_len, **kwargs).tokens)


CASES = {
    "entropy_one_per_step": (24, dict(steps=24, alg="entropy", top_p=0.9)),
    "maskgit_plus_two_per_step": (24, dict(steps=12, alg="maskgit_plus")),
    "topk_margin_topk": (30, dict(steps=7, alg="topk_margin", top_k=20)),
    "entropy_blocks": (26, dict(steps=13, alg="entropy", top_p=0.9, block_size=8)),
    "t2i_like_penalties_boa": (112, dict(steps=28, alg="entropy-penalty", top_p=0.9, repeat_penalty=1.2,
                                         max_position_penalty=2.0, add_boa_token=True)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_token_identical_to_reference(models, name):
  ref, ours, vocab = models
  region_len, kwargs = CASES[name]
  settings = sampler_reference.ReferenceSettings(**kwargs)
  prompt = _prompt(0, 10, vocab)
  want = _reference(ref, vocab, prompt, region_len, settings)
  got = _generate(ours, _ours(settings), vocab, prompt, region_len)
  assert (want != vocab.mask_id).all()
  np.testing.assert_array_equal(got, want)
  assert len(np.unique(got)) >= 2  # not a constant canvas


def test_position_penalty_matches_reference_and_matters(models):
  """T2I's region (260) and penalty (2.0): the ramp over the masked positions beyond the first 100 lowers their
  confidence and so reorders the reveals (it never changes a position's token: per position it is monotone).
  With 10 reveals per step the order changes the tokens (104 of 260 differ with the penalty off)."""
  ref, ours, vocab = models
  prompt = _prompt(5, 10, vocab)
  settings = sampler_reference.ReferenceSettings(steps=26, alg="entropy", top_p=0.9, max_position_penalty=2.0)
  want = _reference(ref, vocab, prompt, 260, settings)
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 260), want)
  off = sampler_reference.ReferenceSettings(steps=26, alg="entropy", top_p=0.9)
  assert (_reference(ref, vocab, prompt, 260, off) != want).any(), "the penalty must change this case"


def test_repetition_penalty_matches_reference_and_matters(models):
  ref, ours, vocab = models
  prompt = _prompt(6, 10, vocab)
  settings = sampler_reference.ReferenceSettings(steps=12, alg="entropy-penalty", top_p=0.9, repeat_penalty=1.5)
  want = _reference(ref, vocab, prompt, 24, settings)
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 24), want)
  off = sampler_reference.ReferenceSettings(steps=12, alg="entropy-penalty", top_p=0.9)
  assert (_reference(ref, vocab, prompt, 24, off) != want).any(), "the penalty must change this case"


def test_repetition_penalty_division_is_bit_identical_to_torch():
  """Upstream divides non-negative penalised logits by the penalty (true division). XLA would turn `/ 1.2` into
  `* (1 / 1.2)`, 1 ulp off for about 1 in 4 logits."""
  rng = np.random.default_rng(7)
  logits = rng.normal(0, 3, (20, 320)).astype(np.float32)
  for penalty in (1.2, 1.5):
    want = torch.as_tensor(logits).clone()
    want[want >= 0] /= penalty
    want[want < 0] *= penalty
    got = jax.jit(lambda x, p=penalty: logits_lib.ctrl_penalty(x, p))(logits)
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
  factors = (1 + rng.random((20, 1))).astype(np.float32)  # the position penalty: one factor per row
  want = torch.as_tensor(logits).clone()
  want = torch.where(want < 0, want * torch.as_tensor(factors), want / torch.as_tensor(factors))
  np.testing.assert_array_equal(np.asarray(jax.jit(logits_lib.ctrl_penalty)(logits, factors)), want.numpy())


def test_s2i_cfg_with_shorter_unconditional_prompt(models):
  """S2I: cfg 2.0 and an unconditional prompt shorter than the prompt. Upstream's forward_dream drops the
  attention mask, so the unconditional row attends to its trailing zero padding; masking it changes tokens."""
  ref, ours, vocab = models
  prompt, uncond = _prompt(1, 16, vocab), _prompt(2, 6, vocab)
  settings = sampler_reference.ReferenceSettings(steps=10, alg="entropy", top_p=0.9, cfg=2.0)
  want = _reference(ref, vocab, prompt, 20, settings, uncond_ids=uncond)
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 20, uncond_ids=uncond), want)
  # The same loop with the unconditional row's padding masked out gives other tokens: the parity above sees it.
  cfg = _ours(settings)
  rows = sampler.build_rows(ours, ours.embed(jnp.asarray(prompt)), np.ones(prompt.shape, bool), 20, cfg,
                            ours.embed(jnp.asarray(uncond)), np.ones(uncond.shape, bool))
  assert rows.segment_ids is None
  valid = np.ones((2, 36), np.int32)
  valid[1, 6 + 20:] = 0
  masked_rows = rows.replace(segment_ids=jnp.asarray(valid))
  specials = sampler.Specials(mask_id=vocab.mask_id, vocab_size=ours.cfg.vocab_size)
  masked = sampler.run(ours, cfg, masked_rows, jnp.full((1, 20), vocab.mask_id), jax.random.key(0), specials)
  assert (np.asarray(masked.tokens) != want).any()


def test_cfg_length_matched_unconditional_prompt(models):
  """T2I: upstream length-matches its unconditional prompt (random text ids), so there is no padding."""
  ref, ours, vocab = models
  prompt, uncond = _prompt(1, 12, vocab), _prompt(2, 12, vocab)
  settings = sampler_reference.ReferenceSettings(steps=10, alg="entropy", top_p=0.9, cfg=2.0)
  want = _reference(ref, vocab, prompt, 20, settings, uncond_ids=uncond)
  got = _generate(ours, _ours(settings), vocab, prompt, 20, uncond_ids=uncond)
  np.testing.assert_array_equal(got, want)
  assert (_generate(ours, SamplerConfig(steps=10, top_p=0.9, mode="upstream"), vocab, prompt, 20) != got).any()


@pytest.mark.parametrize("region_len,boa", [(25, True), (17, False)])
def test_blocks_left_masked_like_upstream(models, region_len, boa):
  """Region length 1 mod the block size (8). With the `<|begin_of_audio|>` pre-fill upstream counts
  ceil(24 / 8) = 3 blocks, so the last position is in none; without it the last block (1 position) gets
  int(1 / 17 * 8) = 0 steps. Either way upstream leaves the last position masked; the default mode fills it."""
  ref, ours, vocab = models
  prompt = _prompt(3, 10, vocab)
  settings = sampler_reference.ReferenceSettings(steps=8 if region_len == 17 else 12, alg="entropy", top_p=0.9,
                                                 block_size=8, add_boa_token=boa)
  want = _reference(ref, vocab, prompt, region_len, settings)
  assert want[0, -1] == vocab.mask_id and (want[0, :-1] != vocab.mask_id).all()
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, region_len), want)
  default = _generate(ours, _ours(settings, mode="default", cfg_alignment="region"), vocab, prompt, region_len)
  assert (default != vocab.mask_id).all()


def test_filled_block_reveals_outside_it_like_upstream(models, monkeypatch):
  """Region 24, blocks of 8, 24 steps, the `<|begin_of_audio|>` pre-fill at index 4: block 0 has 7 masks and 8
  steps, so it is filled after 7 and upstream's 8th step takes the top-1 of 16 all -inf confidences, revealing
  the masked position torch's top-k puts first among the ties (rank 10 of 16: region index 18, in block 2).
  A wrong tie rank changes the tokens (11 of 24 differ with rank 1)."""
  ref, ours, vocab = models
  prompt = _prompt(4, 10, vocab)
  settings = sampler_reference.ReferenceSettings(steps=24, alg="entropy", top_p=0.9, block_size=8,
                                                 add_boa_token=True)
  want = _reference(ref, vocab, prompt, 24, settings)
  assert (want != vocab.mask_id).all()
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 24), want)
  monkeypatch.setattr(sampler, "topk_tie_rank", lambda: np.ones(64, np.int32))
  sampler._run.clear_cache()
  try:
    assert (_generate(ours, _ours(settings), vocab, prompt, 24) != want).any(), "the tie rank must matter here"
  finally:
    sampler._run.clear_cache()


def test_topk_tie_rank_matches_torch():
  """torch.topk(c, 1) on n equal values (upstream's all -inf confidences) returns schedule.topk_tie_rank()[n]."""
  from omnidiff_jax.sampling import schedule
  ties = schedule.topk_tie_rank(400)
  got = [int(torch.topk(torch.full((n,), -torch.inf), 1).indices[0]) for n in range(1, 400)]
  assert got == ties[1:].tolist()
  assert ties[schedule.TOPK_TIE_CUTOFF:].tolist() == [0] * (400 - schedule.TOPK_TIE_CUTOFF)  # partial_sort path


def test_top_p_at_temperature_0_with_bf16_ties(models):
  """Logits rounded to bfloat16 (as a bf16 model gives them) tie often. Tie rule: the kept count and the kept
  values do not depend on the order of tied logits, so neither do the token (argmax, first index) and the
  confidences, unless the cutoff splits the ties of the top logit (two or more tied entries holding > top_p
  together); then upstream keeps whichever torch's unstable sort puts first (unspecified) and we keep the
  lowest indices."""
  from omnidiff_jax.models.dream.modeling import DreamModel

  class Bf16Logits(DreamModel):
    def logits(self, hidden):
      return super().logits(hidden).astype(jnp.bfloat16).astype(jnp.float32)

  from configs import tiny
  ref, _, vocab = models
  with nnx.use_eager_sharding(False):
    ours = Bf16Logits(tiny.get_config().model, rngs=nnx.Rngs(1))
  hf_names.load_backbone(ours, torch_reference.state_dict_numpy(ref).__getitem__)
  hook = ref.lm_head.register_forward_hook(lambda module, inputs, out: out.bfloat16().float())
  try:
    prompt = _prompt(8, 10, vocab)
    for kwargs in (dict(steps=24, alg="entropy"), dict(steps=12, alg="maskgit_plus")):
      settings = sampler_reference.ReferenceSettings(top_p=0.9, **kwargs)
      want = _reference(ref, vocab, prompt, 24, settings)
      np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 24), want)
  finally:
    hook.remove()


def test_spliced_embeddings_match_reference(models):
  """Speech-style input: continuous features written into placeholder slots of the prompt embeddings."""
  ref, ours, vocab = models
  prompt = _prompt(3, 14, vocab)
  slots = np.zeros((1, 14), bool)
  slots[0, 4:9] = True
  features = np.random.default_rng(4).normal(0, 0.05, (1, 5, ours.cfg.hidden_size)).astype(np.float32)
  embeds = splice_features(ours.embed(jnp.asarray(prompt)), jnp.asarray(features), jnp.asarray(slots))
  torch_embeds = ref.get_input_embeddings()(torch.as_tensor(prompt, dtype=torch.long)).detach().clone()
  torch_embeds[0, 4:9] = torch.as_tensor(features[0])
  settings = sampler_reference.ReferenceSettings(steps=8, alg="entropy", top_p=0.9)
  want = _reference(ref, vocab, prompt, 16, settings, prompt_embeds=torch_embeds)
  got = np.asarray(generate(ours, _ours(settings), vocab, prompt_embeds=embeds, region_len=16).tokens)
  np.testing.assert_array_equal(got, want)


def test_mask_id_and_id_zero_rules(biased_models, monkeypatch):
  """Upstream may 'reveal' the mask id (the position stays masked) and its repetition penalty skips id 0 (the
  prompt part of its canvas is id 0). Upstream mode matches; the default mode never keeps the mask id; counting
  id 0 breaks the parity."""
  ref, ours, vocab = biased_models
  prompt = _prompt(9, 10, vocab)
  settings = sampler_reference.ReferenceSettings(steps=12, alg="entropy-penalty", top_p=0.9, repeat_penalty=1.5)
  want = _reference(ref, vocab, prompt, 24, settings)
  assert (want == vocab.mask_id).any() and (want == 0).any()
  np.testing.assert_array_equal(_generate(ours, _ours(settings), vocab, prompt, 24), want)
  default = _generate(ours, _ours(settings, mode="default", cfg_alignment="region"), vocab, prompt, 24)
  assert (default != vocab.mask_id).all()
  present = logits_lib.decoded_ids_present
  with monkeypatch.context() as patch:
    patch.setattr(logits_lib, "decoded_ids_present",
                  lambda region, size, mask_id, exclude_zero: present(region, size, mask_id, False))
    jax.clear_caches()
    counted = _generate(ours, _ours(settings), vocab, prompt, 24)
  jax.clear_caches()
  assert (counted != want).any()


def test_default_mode_reveal_counts_are_per_row(models):
  """Upstream takes one top-k over the flattened batch (its batch > 1 is not row-independent); the default mode
  counts per row, so a batch gives each row's batch-1 tokens."""
  _, ours, vocab = models
  prompts = np.concatenate([_prompt(10, 10, vocab), _prompt(11, 10, vocab)])
  for mode, independent in (("default", True), ("upstream", False)):
    cfg = SamplerConfig(steps=8, top_p=0.9, mode=mode)
    batch = _generate(ours, cfg, vocab, prompts, 16)
    rows = np.concatenate([_generate(ours, cfg, vocab, prompts[i:i + 1], 16) for i in range(2)])
    assert (batch == rows).all() == independent, mode


def test_default_mode_penalises_from_the_first_step_and_counts_id_zero():
  region = jnp.asarray([[0, 5, 9, 9]])  # 9 = mask id
  default = np.asarray(logits_lib.decoded_ids_present(region, 12, 9, exclude_zero=False))[0]
  upstream = np.asarray(logits_lib.decoded_ids_present(region, 12, 9, exclude_zero=True))[0]
  assert default.nonzero()[0].tolist() == [0, 5] and upstream.nonzero()[0].tolist() == [5]


def test_default_cfg_alignment_differs_from_upstream(models):
  """'region' alignment puts both rows' regions at the same indices and masks the unconditional padding."""
  _, ours, vocab = models
  prompt, uncond = _prompt(1, 16, vocab), _prompt(2, 6, vocab)
  tokens = {a: _generate(ours, SamplerConfig(steps=10, top_p=0.9, cfg_scale=2.0, cfg_alignment=a), vocab, prompt,
                         20, uncond_ids=uncond) for a in ("region", "upstream")}
  assert (tokens["region"] != tokens["upstream"]).any()


def test_timesteps_bit_identical_to_torch_linspace():
  for steps in (1, 2, 7, 33, 128, 256, 260, 511):
    want = torch.linspace(1, 1e-3, steps + 1).numpy()
    np.testing.assert_array_equal(linspace_timesteps(steps, 1e-3), want)


def test_boa_index_matches_upstream_formula():
  """Upstream: int((L - n) + n * 0.2) on its canvas (prompt P + n masks), float32 arithmetic."""
  for p, n in ((10, 112), (37, 25), (5, 128), (300, 260)):
    x = torch.cat([torch.zeros(p, dtype=torch.long), torch.full((n,), 7)])
    want = int((x.shape[0] - (x == 7).sum()) + (x == 7).sum() * 0.2) - p
    region = api.prefill_boa(np.full((1, n), 7, np.int32), 0.2, 3, 7)
    assert region[0].tolist().index(3) == want


@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_top_p_filter_matches_reference(top_p):
  """Against upstream's top_p_logits: the same kept values per row (what the token and the confidence depend
  on); of logits tied at the cutoff ours keeps the lowest indices (torch's order is unspecified). Near top_p the
  decision could differ where the float32 cumulative mass rounds differently; these rows have no such case.
  Every radix (bits settled per pass: 1 on CPU, 4 on TPU / GPU) gives the same result."""
  rng = np.random.default_rng(5)
  logits = rng.normal(0, 3, (64, 320)).astype(np.float32)
  logits[:8] = np.round(logits[:8])  # many exact ties, also at the cutoff
  logits[8] = -60.0
  logits[8, :313] = 0.0              # a flat row of 313 tied entries (top_p * 313 is not a boundary)
  logits[9, ::2] = np.finfo(np.float32).min  # entries already filtered (FILL), half the row
  logits[10] *= 1e3                  # a near one-hot row (only the top entry kept)
  logits[11] -= 1e4                  # all negative: the int32 order keys of negative floats
  logits[12:20] = torch.as_tensor(logits[12:20]).bfloat16().float().numpy()  # bf16-like ties
  want = sampler_reference.top_p_logits(torch.as_tensor(logits), top_p).numpy()
  got = np.asarray(logits_lib.top_p_filter(jnp.asarray(logits), top_p))
  fill = np.finfo(np.float32).min
  np.testing.assert_array_equal(np.sort(got, axis=-1), np.sort(want, axis=-1))
  for bits in (1, 2, 4, 8):
    np.testing.assert_array_equal(np.asarray(logits_lib.top_p_filter(jnp.asarray(logits), top_p, bits)), got,
                                  err_msg=f"bits={bits}")
  for row_got, row in zip(got, logits):
    kept = row_got != fill
    if kept.all() or not (row != fill).any():
      continue
    cutoff = row[kept].min()
    tied = np.nonzero(row == cutoff)[0]
    assert kept[tied].tolist() == sorted(kept[tied].tolist(), reverse=True)  # lowest indices kept first
