"""The masked-diffusion loss against a PyTorch transcription of upstream's code (reference section 3.1).

The reference follows dataset_qwen2.forward_process + preprocess (per sample, before packing) and HF
ForCausalLMLoss (per packed row), with torch.rand replaced by the same fixed uniforms our code uses, then
averages the rows as DeepSpeed averages one-row micro-batches.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnidiff_jax.data import synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import loss as losslib
from omnidiff_jax.training.config import add_training_sections
from omnidiff_jax.vocab import VocabLayout

IGNORE = -100


def _config(tiny_config, seq_len=96, rows=6, **loss_overrides):
  cfg = add_training_sections(tiny_config, stage="test", learning_rate=1e-3, mixture={t: 1.0 for t in batchlib.TASKS},
                              steps=10, global_rows=rows, seq_len=seq_len, warmup_steps=1)
  cfg.data.min_len, cfg.data.max_len = 3, 10
  cfg.loss.update(loss_overrides)
  return cfg


def _upstream_forward_process(labels, t, rand_vals, eps=1e-3, special_token_id=0, special_mask_ratio=0.6):
  """forward_process for one sample (bsz 1), with its two torch.rand draws given as `t`, `rand_vals` (L,)."""
  masked_indices = torch.zeros_like(labels, dtype=torch.bool)
  nonneg = (labels != IGNORE).nonzero(as_tuple=True)[0]
  if nonneg.numel() == 0:
    return masked_indices
  start, end = int(nonneg[0]), int(nonneg[-1])
  mask_threshold = (1 - eps) * t[start:end + 1] + eps
  rv = rand_vals[start:end + 1]
  normal_mask = rv <= mask_threshold
  special_mask = rv <= mask_threshold * special_mask_ratio
  masked_indices[start:end + 1] = torch.where(labels[start:end + 1] == special_token_id, special_mask, normal_mask)
  return masked_indices


def _upstream_row(input_ids, labels, segment_ids, u_level, u_draw, vocab):
  """preprocess's final masking applied per packed sample: (masked input ids, loss labels) of one row."""
  input_ids, new_labels = input_ids.clone(), labels.clone()
  for seg in segment_ids.unique().tolist():
    if seg == 0:
      continue
    idx = (segment_ids == seg).nonzero(as_tuple=True)[0]
    lab = labels[idx]
    masked = _upstream_forward_process(lab, u_level[idx], u_draw[idx], special_token_id=vocab.eos_id)
    labels_mask = lab != IGNORE
    input_ids[idx] = torch.where(masked & labels_mask, torch.full_like(lab, vocab.mask_id), input_ids[idx])
    seg_labels = lab.clone()
    seg_labels[(~masked) & labels_mask] = IGNORE
    new_labels[idx] = seg_labels
  return input_ids, new_labels


def _for_causal_lm_loss(logits, labels, reduction="mean"):
  """transformers' ForCausalLMLoss: pad labels with -100, shift left, fp32 cross-entropy."""
  shift_labels = F.pad(labels.long(), (0, 1), value=IGNORE)[..., 1:]
  return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shift_labels.reshape(-1),
                         ignore_index=IGNORE, reduction=reduction)


def _fixture(cfg, seed=0):
  batch = next(synthetic.make_source(cfg))
  rng = np.random.default_rng(seed)
  rows, seq = batch["input_ids"].shape
  u_level, u_draw = rng.random((2, rows, seq), dtype=np.float32)
  logits = rng.normal(0, 3, (rows, seq, cfg.model.vocab_size)).astype(np.float32)
  return batch, u_level, u_draw, logits


def _ours(cfg, batch, u_level, u_draw, logits):
  vocab = VocabLayout.from_config(cfg.vocab)
  masked, t = losslib.mask_from_uniforms(
      jnp.asarray(batch["labels"]), jnp.asarray(batch["segment_ids"]), jnp.asarray(u_level), jnp.asarray(u_draw),
      eos_id=vocab.eos_id, eps=cfg.loss.eps, pad_mask_ratio=cfg.loss.pad_mask_ratio,
      per_sequence=cfg.loss.noise == "per_sequence")
  terms = losslib.diffusion_loss(jnp.asarray(logits), jnp.asarray(batch["labels"]), masked, t,
                                 jnp.asarray(batch["task_ids"]), num_tasks=len(batchlib.TASKS), loss_cfg=cfg.loss)
  return masked, t, terms


@pytest.mark.parametrize("reduction", ["row_mean", "token_mean"])
def test_loss_matches_upstream_reference(tiny_config, reduction):
  cfg = _config(tiny_config, reduction=reduction)
  vocab = VocabLayout.from_config(cfg.vocab)
  batch, u_level, u_draw, logits = _fixture(cfg)
  assert (batch["labels"] == vocab.eos_id).any() and (batch["segment_ids"].max(axis=1) > 1).all()
  masked, _, terms = _ours(cfg, batch, u_level, u_draw, logits)

  ref_ids, ref_labels = zip(*[_upstream_row(*(torch.from_numpy(np.asarray(a[r])) for a in (
      batch["input_ids"], batch["labels"], batch["segment_ids"], u_level, u_draw)), vocab)
      for r in range(len(logits))])
  ref_ids, ref_labels = torch.stack(ref_ids), torch.stack(ref_labels)
  noisy = np.where(np.asarray(masked), vocab.mask_id, batch["input_ids"])
  np.testing.assert_array_equal(noisy, ref_ids.numpy())
  np.testing.assert_array_equal(np.asarray(masked), ref_labels.numpy() != IGNORE)

  logits_t = torch.from_numpy(logits)
  if reduction == "row_mean":
    expected = torch.stack([_for_causal_lm_loss(logits_t[r:r + 1], ref_labels[r:r + 1])
                            for r in range(len(logits))]).mean()
  else:
    expected = _for_causal_lm_loss(logits_t, ref_labels)
  ours = float(terms.numerator / terms.denominator)
  np.testing.assert_allclose(ours, float(expected), rtol=1e-6)  # measured 1.0e-7 (row_mean: 0)
  assert float(terms.masked_tokens) == float((ref_labels[:, 1:] != IGNORE).sum())

  # Per-task logging: masked-target CE sums grouped by the task of each target token.
  per_token = _for_causal_lm_loss(logits_t, ref_labels, reduction="none").reshape(len(logits), -1).numpy()
  task_of_target = np.concatenate([batch["task_ids"][:, 1:], np.zeros((len(logits), 1), int)], axis=1)
  for task in range(len(batchlib.TASKS)):
    sel = (task_of_target == task)
    # measured relative 1.6e-7 at most (sums up to 256); an empty task's sum is exactly 0
    np.testing.assert_allclose(float(terms.task_sums[task]), per_token[sel].sum(), rtol=1.5e-6, atol=0)


def test_paper_variant_per_sequence_t_and_inverse_t_weighting(tiny_config):
  cfg = _config(tiny_config, noise="per_sequence", inverse_t_weighting=True)
  batch, u_level, u_draw, logits = _fixture(cfg, seed=1)
  masked, t, terms = _ours(cfg, batch, u_level, u_draw, logits)
  masked, t = np.asarray(masked), np.asarray(t)
  seg = batch["segment_ids"]
  expected_t = (1 - cfg.loss.eps) * np.take_along_axis(u_level, seg, axis=1) + cfg.loss.eps
  np.testing.assert_allclose(t, expected_t, rtol=2e-7)  # measured 0 (bit-equal); a float32 ulp is 1.2e-7
  # Row mean of sum(CE / t over masked targets) / (number of targets), as LLaDA's SFT loss.
  lp = torch.log_softmax(torch.from_numpy(logits), -1).numpy()
  labels = batch["labels"]
  row_losses = []
  for r in range(len(logits)):
    js = np.nonzero(masked[r, 1:])[0] + 1
    ce = -lp[r, js - 1, labels[r, js]]
    row_losses.append((ce / t[r, js]).sum() / (labels[r, 1:] != IGNORE).sum())
  np.testing.assert_allclose(float(terms.numerator / terms.denominator), np.mean(row_losses), rtol=3e-7)  # 3.3e-8


def test_mask_rates_match_upstream_marginals(tiny_config):
  """Ordinary targets are masked with E[thr] = 0.5005, tail pads with 0.6 * 0.5005 = 0.3003."""
  cfg = _config(tiny_config, seq_len=256, rows=64)
  vocab = VocabLayout.from_config(cfg.vocab)
  batch = {k: jnp.asarray(v) for k, v in next(synthetic.make_source(cfg)).items()}
  noise = losslib.corrupt(jax.random.key(3), batch, jnp.arange(64), mask_id=vocab.mask_id, eos_id=vocab.eos_id,
                          loss_cfg=cfg.loss)
  labels, masked = np.asarray(batch["labels"]), np.asarray(noise.masked)
  pads, ordinary = labels == vocab.eos_id, (labels != IGNORE) & (labels != vocab.eos_id)
  assert not masked[labels == IGNORE].any()
  assert abs(masked[ordinary].mean() - 0.5005) < 0.015, masked[ordinary].mean()
  assert abs(masked[pads].mean() - 0.3003) < 0.015, masked[pads].mean()
  # Row r's draws depend only on (key, r): the same row in another batch position gets the same mask.
  sub = {k: v[5:7] for k, v in batch.items()}
  again = losslib.corrupt(jax.random.key(3), sub, jnp.arange(5, 7), mask_id=vocab.mask_id, eos_id=vocab.eos_id,
                          loss_cfg=cfg.loss)
  np.testing.assert_array_equal(np.asarray(again.masked), masked[5:7])
