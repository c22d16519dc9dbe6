"""Grain pipeline: sources -> per-process shard -> shuffle/repeat -> tail pad -> mixture -> packing -> batches.

Data config (`cfg.data`, built by omnidiff_jax.data.stages.data_config):
  source         'mixture' (this pipeline; 'synthetic' is omnidiff_jax.data.synthetic)
  seed           shuffling, tail pads, mixture and bin order all derive from it
  on_error       'skip' | 'error' for bad samples of online sources (manifest, tfds)
  num_packing_bins, tail_pad_max (16), feature_rows (max user-audio feature rows per row; 0: none),
  feature_dim, read_threads, prefetch
  sources        {name: {kind, path, weight, split}}: kind 'array_record' (path: dir or glob of shards),
                 'manifest' (path: JSONL, tokenized online), 'tfds' (path: dataset name, split, data_dir,
                 adapter: see tfds_source.ADAPTERS; online)

Determinism and resume: every step is a grain transformation with get_state/set_state; the tail pad of a
record is drawn from (seed, crc32 of the source name, record index); the stream of process p is the same for a given
(seed, process_count). Per-process sharding is by record: process p reads records p, p + P, ... of every
source before shuffling (MaxText does the same).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib

import grain
import ml_collections
import numpy as np

from omnidiff_jax.data import manifest as manifest_lib
from omnidiff_jax.data import packing, records
from omnidiff_jax.data.encode import SampleEncoder, online_encoder
from omnidiff_jax.data.errors import BadInputPolicy, BadSample
from omnidiff_jax.data.interfaces import Record
from omnidiff_jax.vocab import VocabLayout

SOURCE_KINDS = ("array_record", "manifest", "tfds")


@dataclasses.dataclass
class OnlineEncoder:
  """Parses / adapts and encodes raw records inside the pipeline; bad ones go to the policy (-> None)."""
  encoder: SampleEncoder
  policy: BadInputPolicy

  def __call__(self, make_record, where: str):
    try:
      record: Record = make_record()
      return self.encoder.encode(record)
    except BadSample as e:
      self.policy.handle(where, e)
      return None


def _manifest_dataset(path: str, online: OnlineEncoder) -> grain.MapDataset:
  lines = manifest_lib.read_lines(path)

  def encode(index, line):
    if not line.strip():
      return None
    return online(functools.partial(manifest_lib.parse_line, path, index + 1, line), f"{path}:{index + 1}")

  return grain.MapDataset.source(lines).map_with_index(encode)


def _tfds_dataset(spec: ml_collections.ConfigDict, online: OnlineEncoder) -> grain.MapDataset:
  from omnidiff_jax.data import tfds_source  # tensorflow_datasets is optional
  source = tfds_source.data_source(spec.path, spec.split, spec.get("data_dir") or None)
  adapt = tfds_source.adapter(spec.adapter)

  def encode(index, example):
    where = f"tfds:{spec.path}/{spec.split}[{index}]"
    return online(functools.partial(adapt, example, where), where)

  return grain.MapDataset.source(source).map_with_index(encode)


def source_dataset(name: str, spec: ml_collections.ConfigDict, *, online: OnlineEncoder | None) -> grain.MapDataset:
  """MapDataset of tokenized samples (None for skipped bad samples of online sources)."""
  if spec.kind == "array_record":
    return records.array_record_source(spec.path)
  if spec.kind not in SOURCE_KINDS:
    raise ValueError(f"data source {name!r}: kind must be one of {SOURCE_KINDS}, got {spec.kind!r}")
  if online is None:
    raise ValueError(f"data source {name!r} ({spec.kind}) is tokenized online and needs a SampleEncoder")
  if spec.kind == "manifest":
    return _manifest_dataset(spec.path, online)
  return _tfds_dataset(spec, online)


def _tail_pad(index: int, sample, *, seed: int, source_key: int, eos_id: int, max_pads: int):
  if sample is None:
    return None
  return packing.add_tail_pad(sample, np.random.default_rng([seed, source_key, index]), eos_id, max_pads)


def stream(name: str, spec, data_cfg, *, eos_id: int, seq_len: int, process_index: int, process_count: int,
           online: OnlineEncoder | None) -> tuple[grain.IterDataset, packing.OverlongFilter]:
  """One source's endless, shuffled, per-process stream of packable samples (and its over-long counter)."""
  source_key = zlib.crc32(name.encode())  # independent tail pads and shuffles per source
  ds = source_dataset(name, spec, online=online)
  ds = ds.map_with_index(functools.partial(_tail_pad, seed=data_cfg.seed, source_key=source_key, eos_id=eos_id,
                                           max_pads=data_cfg.tail_pad_max))
  if len(ds) < process_count:
    raise ValueError(f"data source {name!r} has {len(ds)} records, fewer than {process_count} processes")
  ds = ds[process_index::process_count].shuffle(seed=data_cfg.seed + source_key).repeat(None)
  with_features = data_cfg.feature_rows > 0
  it = ds.filter(lambda s: s is not None).to_iter_dataset(
      grain.ReadOptions(num_threads=data_cfg.read_threads, prefetch_buffer_size=data_cfg.prefetch))
  overlong = packing.OverlongFilter(seq_len, data_cfg.feature_rows, name)
  return it.map(functools.partial(packing.packable, with_features=with_features)).filter(overlong), overlong


@dataclasses.dataclass
class Pipeline:
  """The packed, batched dataset plus its counters (`policy` for bad samples, `overlong` per source)."""
  dataset: grain.IterDataset
  policy: BadInputPolicy
  overlong: dict[str, packing.OverlongFilter]

  def stats(self) -> dict:
    return {"bad_samples": self.policy.report(), "overlong_dropped": {k: v.dropped for k, v in self.overlong.items()}}


def build(data_cfg: ml_collections.ConfigDict, vocab: VocabLayout, *, seq_len: int, local_rows: int,
          process_index: int = 0, process_count: int = 1, encoder: SampleEncoder | None = None) -> Pipeline:
  """Batches of `local_rows` packed rows (dicts of (local_rows, seq_len) arrays, see packing) for one process."""
  policy = BadInputPolicy(data_cfg.on_error)
  online = OnlineEncoder(encoder, policy) if encoder is not None else None
  streams, weights, overlong = {}, {}, {}
  for name in sorted(data_cfg.sources):
    spec = data_cfg.sources[name]
    if spec.weight <= 0:
      continue
    streams[name], overlong[name] = stream(name, spec, data_cfg, eos_id=vocab.eos_id, seq_len=seq_len,
                                           process_index=process_index, process_count=process_count,
                                           online=online)
    weights[name] = float(spec.weight)
  if not streams:
    raise ValueError("data.sources has no source with a positive weight")
  mixed = grain.IterDataset.mix(streams, weights) if len(streams) > 1 else next(iter(streams.values()))
  rows = packing.pack(mixed, seq_len=seq_len, eos_id=vocab.eos_id, feature_rows=data_cfg.feature_rows,
                      num_bins=data_cfg.num_packing_bins, seed=data_cfg.seed,
                      pad_attention=data_cfg.get("pad_attention", "masked"))
  return Pipeline(rows.batch(local_rows, drop_remainder=True), policy, overlong)


def make_source(cfg: ml_collections.ConfigDict, *, process_index: int = 0, process_count: int = 1,
                encoder: SampleEncoder | None = None) -> grain.DatasetIterator:
  """Same entry point as omnidiff_jax.data.synthetic.make_source: this process's checkpointable iterator of
  local batches, from cfg.vocab, cfg.data, cfg.train.global_rows and cfg.train.seq_len. Sources of kind
  'manifest' / 'tfds' are tokenized here, by `encoder` or else encode.online_encoder(cfg.data)."""
  global_rows = cfg.train.global_rows
  if global_rows % process_count:
    raise ValueError(f"train.global_rows={global_rows} is not divisible by {process_count} processes")
  vocab = VocabLayout.from_config(cfg.vocab)
  if encoder is None and any(s.kind != "array_record" for s in cfg.data.sources.values() if s.weight > 0):
    encoder = online_encoder(vocab, cfg.data)
  pipeline = build(cfg.data, vocab, seq_len=cfg.train.seq_len,
                   local_rows=global_rows // process_count, process_index=process_index,
                   process_count=process_count, encoder=encoder)
  return iter(pipeline.dataset)
