"""Per-sample tail pad, over-long filtering and greedy packing into fixed rows (reference section 3.1).

Row format (the batch contract of omnidiff_jax.training.batch, plus the user-audio features):
  input_ids    (L,) int32  packed clean ids, right-padded with <|endoftext|> (151643)
  labels       (L,) int32  target id or IGNORE_ID (-100); -100 on the padding (ignored in the loss)
  positions    (L,) int32  0.. per packed sample; on the padding they continue the last sample's positions
  segment_ids  (L,) int32  1, 2, ... per packed sample; 0 on the padding
  task_ids     (L,) int32  the sample's task id (0 on the padding)
  audio_slots  (L,) int32  1 where a user-audio feature row replaces the embedding (only with feature rows)
  audio_features (F, D) float32  the feature rows in slot order (k-th slot of the row <- k-th row; only
               when feature_rows > 0; zero rows after the last slot)

Masking (which targets become <|mask|>) is not done here: the train step draws it per token from its own
key (omnidiff_jax.training.loss), so rows stay a pure function of the data and the seed.
"""
from __future__ import annotations

import functools
import logging

import grain
import numpy as np

from omnidiff_jax.data.interfaces import IGNORE_ID, Sample

log = logging.getLogger(__name__)

MAX_TAIL_PADS = 16


def add_tail_pad(sample: Sample, rng: np.random.Generator, eos_id: int, max_pads: int = MAX_TAIL_PADS) -> Sample:
  """Upstream `update_labels_and_inputs`: if the sample has no eos, append n ~ U{1..max_pads} eos tokens to
  the ids and, as targets, to the labels."""
  if max_pads <= 0 or (sample["input_ids"] == eos_id).any():
    return sample
  tail = np.full(int(rng.integers(1, max_pads + 1)), eos_id, np.int32)
  return {**sample, "input_ids": np.concatenate([sample["input_ids"], tail]),
          "labels": np.concatenate([sample["labels"], tail])}


def packable(sample: Sample, with_features: bool) -> dict[str, np.ndarray]:
  """Tokenized sample -> the per-token arrays the packer concatenates."""
  length = len(sample["input_ids"])
  out = {"input_ids": np.asarray(sample["input_ids"], np.int32),
         "labels": np.asarray(sample["labels"], np.int32),
         "task_ids": np.full(length, sample["task_id"], np.int32)}
  if with_features:
    slots = np.zeros(length, np.int32)
    slots[sample["feature_slots"]] = 1
    out["audio_slots"] = slots
    out["audio_features"] = np.asarray(sample["audio_features"], np.float32)
  return out


class OverlongFilter:
  """Filter predicate dropping samples that cannot fit one row; counts them (never truncates).

  The counts live in the process that runs the filter (the main process unless mp_prefetch is used).
  """

  def __init__(self, seq_len: int, feature_rows: int, source: str):
    self.seq_len, self.feature_rows, self.source = seq_len, feature_rows, source
    self.dropped = 0

  def __call__(self, sample: dict[str, np.ndarray]) -> bool:
    too_long = len(sample["input_ids"]) > self.seq_len
    too_many_features = "audio_features" in sample and len(sample["audio_features"]) > self.feature_rows
    if too_long or too_many_features:
      self.dropped += 1
      log.warning("source %s: dropping sample of %d tokens / %d feature rows (row: %d / %d); %d dropped so far",
                  self.source, len(sample["input_ids"]), len(sample.get("audio_features", ())), self.seq_len,
                  self.feature_rows, self.dropped)
      return False
    return True


PAD_ATTENTION = ("masked", "upstream")


def _finish_row(row: dict[str, np.ndarray], pad_attention: str = "masked") -> dict[str, np.ndarray]:
  """Packer output (`<key>`, `<key>_segment_ids`, `<key>_positions`) -> the row format above.

  pad_attention 'upstream': the trailing padding gets the last sample's segment id, so that sample attends to the
  pad keys, as upstream's DreamModel.forward does (omni_diffusion/models/dream/modeling_dream.py: segments from
  position_ids == 0, the padding's positions continue the last sample's, and attention_mask only zeroes the pad
  queries' rows). The padding stays out of the loss (labels -100) either way.
  """
  segment_ids, positions = row["input_ids_segment_ids"].copy(), row["input_ids_positions"].copy()
  used = int(np.count_nonzero(segment_ids))
  if 0 < used < len(positions):
    positions[used:] = positions[used - 1] + 1 + np.arange(len(positions) - used)
    if pad_attention == "upstream":
      segment_ids[used:] = segment_ids[used - 1]
  out = {"input_ids": row["input_ids"], "labels": row["labels"], "positions": positions,
         "segment_ids": segment_ids, "task_ids": row["task_ids"]}
  if "audio_features" in row:
    out["audio_slots"], out["audio_features"] = row["audio_slots"], row["audio_features"]
  return out


def pack(ds: grain.IterDataset, *, seq_len: int, eos_id: int, feature_rows: int = 0, num_bins: int = 1,
         seed: int = 0, pad_attention: str = "masked") -> grain.IterDataset:
  """Packs `packable` dicts into fixed rows with grain's first-fit packer (checkpointable state).

  num_bins=1 is upstream's greedy packing (fill one buffer until the next sample does not fit); more bins
  waste less padding. Samples must already fit (see OverlongFilter). pad_attention: 'masked' (padding is
  segment 0, attended by nothing) or 'upstream' (see _finish_row).
  """
  if pad_attention not in PAD_ATTENTION:
    raise ValueError(f"data.pad_attention must be one of {PAD_ATTENTION}, got {pad_attention!r}")
  lengths = {"input_ids": seq_len, "labels": seq_len, "task_ids": seq_len}
  padding = {"input_ids": eos_id, "labels": IGNORE_ID, "task_ids": 0}
  if feature_rows:
    lengths.update(audio_slots=seq_len, audio_features=feature_rows)
    padding.update(audio_slots=0, audio_features=0.0)
  packed = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=lengths, num_packing_bins=num_bins, seed=seed, shuffle_bins=num_bins > 1,
      padding_struct=padding)
  return packed.map(functools.partial(_finish_row, pad_attention=pad_attention))
