"""Tokenize a JSONL manifest or a local TFDS dataset offline into ArrayRecord shards for the Grain pipeline.

  # a manifest (see omnidiff_jax/data/manifest.py for the fields): raw images and audio go through our MAGVIT-v2,
  # WhisperVQ and SenseVoice (converted weights: tools/convert_checkpoint.py magvit / speech-in)
  python tools/tokenize_data.py --manifest data/asr.jsonl --tokenizer /ckpt/Omni-Diffusion \\
      --out_dir data/tokenized/asr --magvit magvit.safetensors --whisper_vq whisper_vq.safetensors \\
      --sensevoice sensevoice.safetensors --cmvn SenseVoiceSmall/am.mvn
  # a TFDS dataset prepared as ArrayRecord
  python tools/tokenize_data.py --tfds librispeech:train_clean100 --tfds_adapter asr --tokenizer /ckpt/Omni-Diffusion \\
      --sensevoice sensevoice.safetensors --cmvn SenseVoiceSmall/am.mvn --out_dir data/tokenized/asr
  # tiny random tokenizer networks (tests, demos)
  python tools/tokenize_data.py --manifest m.jsonl --tokenizer tok.json --out_dir out \\
      --magvit_config configs/magvit.py:tiny --whisper_vq_config configs/whisper_vq_tiny.py \\
      --sensevoice_config configs/sensevoice_tiny.py
  # 4 workers (e.g. one per host), each takes every 4th shard; re-running skips finished shards
  python tools/tokenize_data.py ... --worker_index 2 --num_workers 4

Output: <out_dir>/<prefix>-NNNNN.array_record, one `.report.json` per shard (skipped samples with file:line
and reason, token counts, samples longer than --max_len) and the merged <out_dir>/report.json.
Media without precomputed codes / features go through omnidiff_jax.media_tokenizers.MediaTokenizers (each network
built on first use; without weights it is random, with a warning). --media_tokenizer replaces them with a
callable `module:function(vocab_layout, feature_dim)` returning an omnidiff_jax.data.interfaces.MediaTokenizer.
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
_MEDIA_TOKENIZER = flags.DEFINE_string("media_tokenizer", "", "module:function building another MediaTokenizer.")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
_MAGVIT_CONFIG = flags.DEFINE_string("magvit_config", os.path.join(CONFIG_DIR, "magvit.py"), "MAGVIT-v2 config.")
_MAGVIT = flags.DEFINE_string("magvit", None, "MAGVIT-v2 weights (ours or torch); none: random.")
_WHISPER_VQ_CONFIG = flags.DEFINE_string("whisper_vq_config", os.path.join(CONFIG_DIR, "whisper_vq.py"),
                                         "WhisperVQ config.")
_WHISPER_VQ = flags.DEFINE_string("whisper_vq", None, "WhisperVQ parameter file; none: random.")
_SENSEVOICE_CONFIG = flags.DEFINE_string("sensevoice_config", os.path.join(CONFIG_DIR, "sensevoice.py"),
                                         "SenseVoice (speech-input) config.")
_SENSEVOICE = flags.DEFINE_string("sensevoice", None, "SenseVoice encoder parameter file; none: random.")
_CMVN = flags.DEFINE_string("cmvn", "", "SenseVoiceSmall's am.mvn (overrides the config's).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of random tokenizer networks (and of dither noise).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory for the shards and reports.")
_PREFIX = flags.DEFINE_string("prefix", "data", "Shard file name prefix.")
_ON_ERROR = flags.DEFINE_enum("on_error", "skip", ["skip", "error"], "Bad sample: skip and report, or stop.")
_RECORDS_PER_SHARD = flags.DEFINE_integer("records_per_shard", 10_000, "Input records per output shard.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Records per media-tokenizer batch.")
_MAX_LEN = flags.DEFINE_integer("max_len", 3072, "Samples longer than this are listed in the report (kept).")
_FEATURE_DIM = flags.DEFINE_integer("feature_dim", None, "Width of user-speech features (default: the SenseVoice "
                                    "config's encoder output size).")
_WORKER_INDEX = flags.DEFINE_integer("worker_index", 0, "This worker's index.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Number of workers splitting the shards.")

flags.mark_flags_as_required(["tokenizer", "out_dir"])


def _media_tokenizer(layout):
  """(MediaTokenizer, feature width): --media_tokenizer's, else ours from the --magvit* / --whisper_vq* /
  --sensevoice* flags."""
  if _MEDIA_TOKENIZER.value:
    module, _, name = _MEDIA_TOKENIZER.value.partition(":")
    if not name or _FEATURE_DIM.value is None:
      raise app.UsageError(f"--media_tokenizer must look like module:function and needs --feature_dim, got "
                           f"{_MEDIA_TOKENIZER.value!r}")
    return getattr(importlib.import_module(module), name)(layout, _FEATURE_DIM.value), _FEATURE_DIM.value
  from omnidiff_jax.media_tokenizers import MediaTokenizers
  tokenizers = MediaTokenizers.from_configs(
      magvit=_MAGVIT_CONFIG.value, whisper_vq=_WHISPER_VQ_CONFIG.value, sensevoice=_SENSEVOICE_CONFIG.value,
      magvit_weights=_MAGVIT.value, whisper_vq_weights=_WHISPER_VQ.value, sensevoice_weights=_SENSEVOICE.value,
      cmvn_file=_CMVN.value, seed=_SEED.value)
  if _FEATURE_DIM.value not in (None, tokenizers.feature_dim):
    raise app.UsageError(f"--feature_dim={_FEATURE_DIM.value}, but --sensevoice_config gives features of width "
                         f"{tokenizers.feature_dim}")
  return tokenizers, tokenizers.feature_dim


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
  media_tokenizer, feature_dim = _media_tokenizer(layout)
  encoder = SampleEncoder(layout, vocab_lib.load_tokenizer(_TOKENIZER.value), media_tokenizer,
                          feature_dim=feature_dim)
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
  app.run(main)
