"""Token-identical parity of the jitted sampler (mode='upstream') with the PyTorch reference of upstream's loop,
both driving the same random tiny model, at temperature 0 and alg_temp 0."""
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("torch_reference")
sampler_reference = pytest.importorskip("sampler_reference")

from omnidiff_jax import sharding  # noqa: E402
from omnidiff_jax.models.dream import params as hf_names  # noqa: E402
from omnidiff_jax.sampling import SamplerConfig, generate, linspace_timesteps, splice_features  # noqa: E402
from omnidiff_jax.vocab import VocabLayout  # noqa: E402


@pytest.fixture(scope="module")
def models():
  from configs import tiny
  cfg = tiny.get_config()
  ref = sampler_reference.sharpen(torch_reference.random_qwen2(cfg.model, seed=0))
  ours = sharding.create_model(cfg.model, seed=1)
  hf_names.load_backbone(ours, torch_reference.state_dict_numpy(ref).__getitem__)
  return ref, ours, VocabLayout.from_config(cfg.vocab)


def _prompt(seed, length, vocab):
  return np.random.default_rng(seed).integers(0, vocab.text_size - 30, (1, length)).astype(np.int32)


def _reference(ref, vocab, prompt_ids, region_len, settings, uncond_ids=None, prompt_embeds=None):
  if prompt_embeds is None:
    prompt_embeds = ref.get_input_embeddings()(torch.as_tensor(prompt_ids, dtype=torch.long))
  out = sampler_reference.generate(
      ref, prompt_embeds, region_len, settings, mask_id=vocab.mask_id,
      boa_id=vocab.special_id("<|begin_of_audio|>"),
      uncond_ids=None if uncond_ids is None else torch.as_tensor(uncond_ids, dtype=torch.long))
  return out.numpy()


def _ours(settings: "sampler_reference.ReferenceSettings") -> SamplerConfig:
  return SamplerConfig(
      steps=settings.steps, alg=settings.alg, temperature=settings.temperature, top_p=settings.top_p,
      top_k=settings.top_k, eps=settings.eps, block_size=settings.block_size,
      repetition_penalty=settings.repeat_penalty, position_penalty=settings.max_position_penalty,
      boa_fraction=0.2 if settings.add_boa_token else None, cfg_scale=settings.cfg, cfg_alignment="upstream",
      mode="upstream")


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
  got = np.asarray(generate(ours, _ours(settings), vocab, prompt_ids=prompt, region_len=region_len).tokens)
  assert (want != vocab.mask_id).all()
  np.testing.assert_array_equal(got, want)
  assert len(np.unique(got)) >= 2  # not a constant canvas


def test_cfg_upstream_alignment_matches_reference(models):
  ref, ours, vocab = models
  prompt = _prompt(1, 12, vocab)
  uncond = _prompt(2, 12, vocab)  # T2I: the unconditional prompt is length-matched upstream
  settings = sampler_reference.ReferenceSettings(steps=10, alg="entropy", top_p=0.9, cfg=2.0)
  want = _reference(ref, vocab, prompt, 20, settings, uncond_ids=uncond)
  got = np.asarray(generate(ours, _ours(settings), vocab, prompt_ids=prompt, region_len=20,
                            uncond_ids=uncond).tokens)
  np.testing.assert_array_equal(got, want)
  no_cfg = np.asarray(generate(ours, SamplerConfig(steps=10, top_p=0.9, mode="upstream"), vocab,
                               prompt_ids=prompt, region_len=20).tokens)
  assert (no_cfg != got).any()


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


def test_timesteps_bit_identical_to_torch_linspace():
  for steps in (1, 2, 7, 33, 128, 256, 260, 511):
    want = torch.linspace(1, 1e-3, steps + 1).numpy()
    np.testing.assert_array_equal(linspace_timesteps(steps, 1e-3), want)


# Near p the decision can differ where the float32 cumulative mass rounds differently (torch accumulates its
# CPU cumsum in double); these rows have no such boundary case. Ties at the cutoff are kept in index order
# (torch's stable sort; upstream's default sort leaves their order implementation-defined).
@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_top_p_filter_matches_reference(top_p):
  from omnidiff_jax.sampling.logits import top_p_filter
  rng = np.random.default_rng(5)
  logits = rng.normal(0, 3, (64, 320)).astype(np.float32)
  logits[:8] = np.round(logits[:8])  # many exact ties, also at the cutoff
  logits[8] = -60.0
  logits[8, :313] = 0.0              # a flat row of 313 tied entries (top_p * 313 is not a boundary)
  logits[9, ::2] = np.finfo(np.float32).min  # entries already filtered (FILL), half the row
  logits[10] *= 1e3                  # a near one-hot row (only the top entry kept)
  logits[11] -= 1e4                  # all negative: the int32 order keys of negative floats
  want = sampler_reference._top_p(torch.as_tensor(logits), top_p, stable=True).numpy()
  np.testing.assert_array_equal(np.asarray(top_p_filter(jnp.asarray(logits), top_p)), want)
