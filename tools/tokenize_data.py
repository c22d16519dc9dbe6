"""Tokenize a JSONL manifest or a local TFDS dataset offline into ArrayRecord shards for the Grain pipeline.

  # manifest with precomputed codes / features (see omnidiff_jax/data/manifest.py for the fields)
  python tools/tokenize_data.py --manifest data/asr.jsonl --tokenizer /ckpt/Omni-Diffusion --out_dir data/tokenized/asr
  # a TFDS dataset prepared as ArrayRecord, raw media tokenized by a MediaTokenizer factory
  python tools/tokenize_data.py --tfds librispeech:train_clean100 --tfds_adapter asr --tokenizer /ckpt/Omni-Diffusion \\
      --media_tokenizer my_pkg.speech:make_tokenizer --out_dir data/tokenized/asr
  # 4 workers (e.g. one per host), each takes every 4th shard; re-running skips finished shards
  python tools/tokenize_data.py ... --worker_index 2 --num_workers 4

Output: <out_dir>/<prefix>-NNNNN.array_record, one `.report.json` per shard (skipped samples with file:line
and reason, token counts, samples longer than --max_len) and the merged <out_dir>/report.json.
--media_tokenizer names a callable `module:function(vocab_layout, feature_dim)` returning an object with
encode_image / encode_speech / speech_features (omnidiff_jax.data.interfaces.MediaTokenizer); without it,
every image / speech item must carry precomputed codes or features.
"""
import importlib
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "omni_7b.py"),
    "Config whose `vocab` section gives the token-id layout.")
_MANIFEST = flags.DEFINE_string("manifest", "", "JSONL manifest to tokenize.")
_MEDIA_ROOT = flags.DEFINE_string("media_root", "", "Directory relative media paths start from (default: the "
                                  "manifest's directory).")
_TFDS = flags.DEFINE_string("tfds", "", "Local TFDS dataset as name:split (prepared with file_format=array_record).")
_TFDS_ADAPTER = flags.DEFINE_enum("tfds_adapter", "asr", ["asr", "caption"], "How TFDS examples become samples.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "", "TFDS data_dir (default: TFDS's own).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer.json of the Qwen2 BPE, or a checkpoint directory "
                                 "holding it; its ids are verified against the config's layout.")
_MEDIA_TOKENIZER = flags.DEFINE_string("media_tokenizer", "", "module:function building the MediaTokenizer.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory for the shards and reports.")
_PREFIX = flags.DEFINE_string("prefix", "data", "Shard file name prefix.")
_ON_ERROR = flags.DEFINE_enum("on_error", "skip", ["skip", "error"], "Bad sample: skip and report, or stop.")
_RECORDS_PER_SHARD = flags.DEFINE_integer("records_per_shard", 10_000, "Input records per output shard.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Records per media-tokenizer batch.")
_MAX_LEN = flags.DEFINE_integer("max_len", 3072, "Samples longer than this are listed in the report (kept).")
_FEATURE_DIM = flags.DEFINE_integer("feature_dim", 512, "Width of user-speech features.")
_WORKER_INDEX = flags.DEFINE_integer("worker_index", 0, "This worker's index.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Number of workers splitting the shards.")

flags.mark_flags_as_required(["tokenizer", "out_dir"])


def _media_tokenizer(spec: str, layout, feature_dim: int):
  if not spec:
    return None
  module, _, name = spec.partition(":")
  if not name:
    raise app.UsageError(f"--media_tokenizer must look like module:function, got {spec!r}")
  return getattr(importlib.import_module(module), name)(layout, feature_dim)


def main(argv):
  del argv
  from omnidiff_jax import vocab as vocab_lib

  if bool(_MANIFEST.value) == bool(_TFDS.value):
    raise app.UsageError("give exactly one of --manifest and --tfds")
  layout = vocab_lib.VocabLayout.from_config(_CONFIG.value.vocab)
  try:
    vocab_lib.verify_tokenizer(layout, _TOKENIZER.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"--tokenizer {_TOKENIZER.value} does not fit the vocab layout of --config: {e}")
  from omnidiff_jax.data import offline  # heavier imports (grain, jax) after the quick checks
  from omnidiff_jax.data.encode import SampleEncoder
  encoder = SampleEncoder(layout, vocab_lib.load_tokenizer(_TOKENIZER.value),
                          _media_tokenizer(_MEDIA_TOKENIZER.value, layout, _FEATURE_DIM.value),
                          feature_dim=_FEATURE_DIM.value)
  if _MANIFEST.value:
    items = offline.manifest_items(_MANIFEST.value, _MEDIA_ROOT.value or None)
  else:
    name, _, split = _TFDS.value.partition(":")
    items = offline.tfds_items(name, split or "train", _TFDS_ADAPTER.value, _TFDS_DATA_DIR.value or None)
  report = offline.tokenize(items, _OUT_DIR.value, encoder, on_error=_ON_ERROR.value, prefix=_PREFIX.value,
                            records_per_shard=_RECORDS_PER_SHARD.value, batch_size=_BATCH_SIZE.value,
                            max_len=_MAX_LEN.value, worker_index=_WORKER_INDEX.value,
                            num_workers=_NUM_WORKERS.value)
  summary = {k: report[k] for k in ("shards", "inputs", "written", "tokens", "skipped", "by_reason")}
  print(json.dumps({**summary, "overlong": len(report["overlong"])}, indent=1))
  print(f"report: {os.path.join(_OUT_DIR.value, 'report.json')}")


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  app.run(main)
