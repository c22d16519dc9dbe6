"""A small deterministic, checkpointable Grain source of packed rows for developing the trainer.

Each row is a pure function of (seed, global row index): ChatML-shaped samples
  <|im_start|> user \\n PROMPT <|im_end|> \\n <|im_start|> assistant \\n ANSWER <|im_end|> \\n <|endoftext|> x (1..16)
packed greedily into `seq_len` tokens and right-padded with <|endoftext|> (segment 0, positions continuing),
as upstream packs. The task of each sample is drawn from the mixture weights `data.mixture`; its prompt
and answer use the task's input and output modality (text ids, speech codes or image codes), and the
answer is a fixed token-wise function of the prompt, so the task is learnable.

The source yields the batch contract of omnidiff_jax.training.batch: process p of P gets rows
[p * R / P, (p + 1) * R / P) of every global batch of R rows. The iterator state is the next batch index,
so resume is exact and no sample is repeated or skipped.
"""
from __future__ import annotations

import functools

import grain
import ml_collections
import numpy as np

from omnidiff_jax import tasks
from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS
from omnidiff_jax.vocab import VocabLayout

# (input, output) modality of each task's stand-in samples: its first input and last output modality (svqa and
# sqa: speech in, speech out; their text part is left out).
TASK_MODALITIES = tasks.LiveMapping(lambda: {s.name: (s.inputs[0], s.outputs[-1]) for s in tasks.specs()})
# Stand-ins for the BPE pieces "user", "assistant" and "\n".
USER_ID, ASSISTANT_ID, NEWLINE_ID = 1, 2, 3
FIRST_CONTENT_TEXT_ID = 10
MAX_TAIL_PADS = 16


def _modality_range(vocab: VocabLayout, modality: str) -> tuple[int, int]:
  """(first id, number of ids) of a modality's content tokens."""
  if modality == "text":
    return FIRST_CONTENT_TEXT_ID, vocab.eos_id - FIRST_CONTENT_TEXT_ID
  if modality == "audio":
    return vocab.audio_offset, vocab.num_audio_codes
  return vocab.image_offset, vocab.num_image_codes


def _sample(rng: np.random.Generator, vocab: VocabLayout, task: int, data_cfg) -> tuple[list[int], list[int]]:
  """One ChatML sample: (input ids, labels)."""
  (in_first, in_size), (out_first, out_size) = (_modality_range(vocab, m) for m in TASK_MODALITIES[TASKS[task]])
  codes = rng.integers(0, in_size, rng.integers(data_cfg.min_len, data_cfg.max_len + 1))
  answer = (out_first + (codes * 7 + 3 * task + 1) % out_size).tolist()
  prompt = [vocab.im_start_id, USER_ID, NEWLINE_ID, *(in_first + codes).tolist(), vocab.im_end_id, NEWLINE_ID,
            vocab.im_start_id, ASSISTANT_ID, NEWLINE_ID]
  target = answer + [vocab.im_end_id, NEWLINE_ID] + [vocab.eos_id] * int(rng.integers(1, MAX_TAIL_PADS + 1))
  return prompt + target, [IGNORE_ID] * len(prompt) + target


def packed_row(index: int, *, vocab: VocabLayout, data_cfg: ml_collections.ConfigDict, seq_len: int,
               task_probs: np.ndarray) -> dict[str, np.ndarray]:
  """Global row `index` of the stream: dict of (seq_len,) int32 arrays (the batch contract's fields)."""
  rng = np.random.default_rng([data_cfg.seed, index])
  row = {k: np.zeros(seq_len, np.int32) for k in ("input_ids", "labels", "positions", "segment_ids", "task_ids")}
  row["input_ids"][:] = vocab.eos_id
  row["labels"][:] = IGNORE_ID
  used, segment = 0, 0
  while True:
    task = int(rng.choice(len(TASKS), p=task_probs))
    ids, labels = _sample(rng, vocab, task, data_cfg)
    if used + len(ids) > seq_len:
      break
    segment += 1
    span = slice(used, used + len(ids))
    row["input_ids"][span], row["labels"][span] = ids, labels
    row["positions"][span], row["segment_ids"][span], row["task_ids"][span] = np.arange(len(ids)), segment, task
    used += len(ids)
  if segment == 0:
    raise ValueError(f"data.max_len={data_cfg.max_len} gives samples longer than seq_len={seq_len}")
  row["positions"][used:] = row["positions"][used - 1] + 1 + np.arange(seq_len - used)
  return row


def _local_batch(step: int, *, rows: int, first_row: int, global_rows: int, make_row) -> dict[str, np.ndarray]:
  out = [make_row(step * global_rows + first_row + j) for j in range(rows)]
  return {k: np.stack([r[k] for r in out]) for k in out[0]}


def task_probabilities(mixture: ml_collections.ConfigDict) -> np.ndarray:
  """(len(TASKS),) probabilities from a {task: weight} mixture; unknown task names are an error."""
  unknown = set(mixture.keys()) - set(TASKS)
  if unknown:
    raise ValueError(f"data.mixture has unknown tasks {sorted(unknown)}; known tasks are {TASKS}")
  weights = np.array([float(mixture.get(t, 0.0)) for t in TASKS])
  if weights.sum() <= 0:
    raise ValueError("data.mixture needs at least one positive weight")
  return weights / weights.sum()


def make_dataset(cfg: ml_collections.ConfigDict, *, process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
  """Batch k of this process's stream (dicts of (R / P, seq_len) int32 arrays) at index k.

  Uses cfg.vocab, cfg.data (seed, min_len, max_len, mixture), cfg.train.global_rows and cfg.train.seq_len.
  """
  global_rows = cfg.train.global_rows
  if global_rows % process_count:
    raise ValueError(f"train.global_rows={global_rows} is not divisible by {process_count} processes")
  rows = global_rows // process_count
  make_row = functools.partial(packed_row, vocab=VocabLayout.from_config(cfg.vocab), data_cfg=cfg.data,
                               seq_len=cfg.train.seq_len, task_probs=task_probabilities(cfg.data.mixture))
  return grain.MapDataset.range(cfg.data.num_batches).map(functools.partial(
      _local_batch, rows=rows, first_row=process_index * rows, global_rows=global_rows, make_row=make_row))


def to_iterator(dataset: grain.MapDataset) -> grain.DatasetIterator:
  """The checkpointable iterator the trainer consumes (state: the next batch index)."""
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def make_source(cfg: ml_collections.ConfigDict, *, process_index: int = 0,
                process_count: int = 1) -> grain.DatasetIterator:
  """Checkpointable iterator of this process's local batches (see make_dataset)."""
  return to_iterator(make_dataset(cfg, process_index=process_index, process_count=process_count))
