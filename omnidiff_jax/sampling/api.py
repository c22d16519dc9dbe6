"""Python API of the sampler: prompts as ids or embeddings in, the filled generation region out."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omnidiff_jax.models.speech_in.adapter import splice_features
from omnidiff_jax.sampling import sampler
from omnidiff_jax.sampling.schedule import SamplerConfig
from omnidiff_jax.vocab import VocabLayout

Array = jax.Array


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token-id lists to a common length. Returns ids (B, P) int32 and mask (B, P) bool (True = real)."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  length = max(len(p) for p in prompts)
  ids = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for row, prompt in enumerate(prompts):
    ids[row, length - len(prompt):] = prompt
    mask[row, length - len(prompt):] = True
  return ids, mask


def embed_prompts(model, prompts: Sequence[Sequence[int]], pad_id: int,
                  features: Sequence[np.ndarray | None] | None = None,
                  slots: Sequence[Sequence[int]] | None = None) -> tuple[Array, np.ndarray]:
  """Left-padded prompt embeddings with continuous features written into their slots (splice_features).

  prompts: B id lists of any lengths; features: per row None or (S_b, D) rows (e.g. projected speech
  features, D = the model's hidden size), consumed in order by slots[b]: (S_b,) increasing positions in the
  unpadded prompt. Returns embeds (B, P, D) in the model's dtype and mask (B, P) bool (True = real token).
  """
  ids, mask = left_pad(prompts, pad_id)
  embeds = model.embed(jnp.asarray(ids))
  features = [None] * len(prompts) if features is None else list(features)
  slots = [()] * len(prompts) if slots is None else list(slots)
  if not len(features) == len(slots) == len(prompts):
    raise ValueError(f"{len(prompts)} prompts but {len(features)} feature arrays and {len(slots)} slot lists")
  width = max([len(f) for f in features if f is not None] + [1])
  rows = np.zeros((len(prompts), width, embeds.shape[-1]), np.float32)
  slot_map = np.zeros(ids.shape, bool)
  for b, (prompt, feats, positions) in enumerate(zip(prompts, features, slots)):
    positions = np.asarray(positions, np.int64)
    feats = np.zeros((0, embeds.shape[-1]), np.float32) if feats is None else np.asarray(feats, np.float32)
    if feats.ndim != 2 or feats.shape != (len(positions), embeds.shape[-1]):
      raise ValueError(f"row {b}: features of shape {feats.shape} for {len(positions)} slots; expected "
                       f"({len(positions)}, {embeds.shape[-1]}) (the model's hidden size)")
    if positions.size and (positions.min() < 0 or positions.max() >= len(prompt) or (np.diff(positions) <= 0).any()):
      raise ValueError(f"row {b}: slot positions must increase and lie in [0, {len(prompt)}), got {positions.tolist()}")
    slot_map[b, ids.shape[1] - len(prompt) + positions] = True
    rows[b, :len(feats)] = feats
  if not slot_map.any():
    return embeds, mask
  return splice_features(embeds, jnp.asarray(rows), jnp.asarray(slot_map)), mask


def initial_region(batch: int, region_len: int, mask_id: int, known: np.ndarray | None = None) -> np.ndarray:
  """(B, G) int32 region: all mask ids, or `known` (inpainting: mask ids where tokens are to be generated)."""
  if known is None:
    return np.full((batch, region_len), mask_id, np.int32)
  known = np.asarray(known, np.int32)
  if known.shape != (batch, region_len):
    raise ValueError(f"the known region has shape {known.shape}, expected {(batch, region_len)}")
  return known.copy()


def prefill_boa(region: np.ndarray, fraction: float, boa_id: int, mask_id: int) -> np.ndarray:
  """Upstream's `<|begin_of_audio|>` pre-fill: region index int(float32(masked count) * float32(fraction))."""
  region = region.copy()
  for row in region:
    count = np.float32((row == mask_id).sum())
    row[min(int(count * np.float32(fraction)), len(row) - 1)] = boa_id
  return region


def generate(model, cfg: SamplerConfig, vocab: VocabLayout, *, prompt_ids=None, prompt_mask=None,
             prompt_embeds: Array | None = None, region_len: int | None = None, known_region=None,
             uncond_ids=None, uncond_mask=None, seed: int = 0) -> sampler.SampleResult:
  """Fills a generation region after each prompt with the jitted sampler.

  model: DreamModel. prompt_ids: (B, P) int (with prompt_mask, left padded) or a list of id lists (left padded
  here with the pad id); or prompt_embeds (B, P, D) with prompt_mask, e.g. from audio_adapter.splice_features. Give
  region_len for an all-mask region, or known_region (B, G) ids with mask ids where to generate (inpainting).
  uncond_ids / uncond_mask: the unconditional prompts for CFG (cfg.cfg_scale > 0), same forms as prompt_ids.
  Returns a SampleResult with tokens (B, G).
  """
  if (prompt_ids is None) == (prompt_embeds is None):
    raise ValueError("pass exactly one of prompt_ids or prompt_embeds")
  if prompt_ids is not None:
    prompt_ids, prompt_mask = as_padded(prompt_ids, prompt_mask, vocab.pad_id, "prompt_ids")
    prompt_embeds = model.embed(jnp.asarray(prompt_ids))
  elif prompt_mask is None:
    prompt_mask = np.ones(prompt_embeds.shape[:2], bool)
  batch = prompt_embeds.shape[0]
  if (region_len is None) == (known_region is None):
    raise ValueError("pass exactly one of region_len or known_region")
  if known_region is not None:
    region_len = np.asarray(known_region).shape[1]
  region = initial_region(batch, region_len, vocab.mask_id, known_region)
  if cfg.boa_fraction is not None:
    region = prefill_boa(region, cfg.boa_fraction, vocab.special_id("<|begin_of_audio|>"), vocab.mask_id)
  uncond_embeds = None
  if uncond_ids is not None:
    uncond_ids, uncond_mask = as_padded(uncond_ids, uncond_mask, vocab.pad_id, "uncond_ids")
    if uncond_ids.shape[0] == 1 and batch > 1:
      uncond_ids, uncond_mask = uncond_ids.repeat(batch, 0), uncond_mask.repeat(batch, 0)
    uncond_embeds = model.embed(jnp.asarray(uncond_ids))
  rows = sampler.build_rows(model, prompt_embeds, prompt_mask, region_len, cfg, uncond_embeds, uncond_mask)
  specials = sampler.Specials.for_model(model.cfg, vocab.mask_id)
  return sampler.run(model, cfg, rows, jnp.asarray(region), jax.random.key(seed), specials)


def as_padded(ids, mask, pad_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(B, P) ids and mask from an array (+ optional mask) or a list of id lists (left padded here)."""
  if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple, np.ndarray)):
    if mask is not None:
      raise ValueError(f"{name} given as a list of lists is padded here; do not pass a mask with it")
    return left_pad(ids, pad_id)
  ids = np.asarray(ids, np.int32)
  if ids.ndim != 2:
    raise ValueError(f"{name} must be (B, P) or a list of id lists, got shape {ids.shape}")
  mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask, bool)
  return ids, mask
