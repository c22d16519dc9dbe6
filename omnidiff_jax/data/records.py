"""Tokenized samples <-> bytes, and ArrayRecord shards of them.

Each ArrayRecord record is one tokenized sample (see omnidiff_jax.data.encode) serialized with
`flax.serialization.msgpack_serialize` (numpy arrays keep dtype and shape). Shards are named
`<prefix>-NNNNN.array_record`; a shard only gets its final name once it is complete, so a glob over the
final names never sees a half-written shard.
"""
from __future__ import annotations

import glob
import os

import grain
import numpy as np
from array_record.python import array_record_module
from flax import serialization

from omnidiff_jax.data.interfaces import Sample

SHARD_SUFFIX = ".array_record"
SAMPLE_KEYS = ("input_ids", "labels", "task_id", "feature_slots", "audio_features")


def serialize(sample: Sample) -> bytes:
  return serialization.msgpack_serialize({k: np.asarray(sample[k]) for k in SAMPLE_KEYS})


def deserialize(data: bytes) -> Sample:
  sample = serialization.msgpack_restore(data)
  missing = [k for k in SAMPLE_KEYS if k not in sample]
  if missing:
    raise ValueError(f"record lacks keys {missing}; expected {SAMPLE_KEYS} (not written by tokenize_data?)")
  return sample


def shard_path(out_dir: str, prefix: str, index: int) -> str:
  return os.path.join(out_dir, f"{prefix}-{index:05d}{SHARD_SUFFIX}")


def write_shard(path: str, samples) -> int:
  """Writes samples to `path` atomically (temporary name, then rename); returns the number written."""
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  count = 0
  for sample in samples:
    writer.write(serialize(sample))
    count += 1
  writer.close()
  os.replace(tmp, path)
  return count


def shard_files(pattern: str) -> list[str]:
  """Sorted shard files of a glob pattern or a directory; a clear error when there are none."""
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*" + SHARD_SUFFIX)
  files = sorted(glob.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no ArrayRecord shards match {pattern!r}")
  return files


def array_record_source(pattern: str) -> grain.MapDataset:
  """MapDataset of tokenized samples over all shards matching `pattern` (random access)."""
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shard_files(pattern))).map(deserialize)
