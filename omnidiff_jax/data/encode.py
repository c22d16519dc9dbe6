"""Records -> tokenized samples (the unit stored in ArrayRecord shards and fed to packing).

A tokenized sample is a dict of numpy arrays:
  input_ids      (L,) int32   ChatML ids with media expanded (clean: no masking, no tail pad yet)
  labels         (L,) int32   the id on assistant targets, IGNORE_ID (-100) elsewhere
  task_id        ()   int32   index into TASKS
  feature_slots  (F,) int32   positions of the user-audio feature slots
  audio_features (F, D) float32  one feature row per slot (D = feature_dim; F = 0 without user audio)

Media per placeholder (reference section 3.4): an image in a user turn is 512 px -> 1024 MAGVIT-v2 codes, in
an assistant turn 256 px -> 256 codes (IMAGE_GRID; the pixel size follows the tokenizer's image_downsample);
assistant speech -> WhisperVQ codes; user speech -> features (one feature slot each). Precomputed codes /
features in the record are validated and used as they are; the rest is loaded (omnidiff_jax.data.media) and
tokenized in batches through a `MediaTokenizer`.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

import tokenizers

from omnidiff_jax.chat import build_chat
from omnidiff_jax.data import media as media_lib
from omnidiff_jax.data.errors import BadSample
from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS, MediaItem, MediaTokenizer, Record, Sample
from omnidiff_jax.vocab import VocabLayout

# Codes per image side by role: a user image is 32 x 32 = 1024 codes (512 px for MAGVIT-v2's 16 px per code), an
# assistant image 16 x 16 = 256 codes (256 px). The pixel size is the grid times the tokenizer's image_downsample.
IMAGE_GRID = {"user": 32, "assistant": 16}


def _load_array(path_or_list, what: str) -> np.ndarray:
  if not isinstance(path_or_list, str):
    return np.asarray(path_or_list)
  if not os.path.isfile(path_or_list):
    raise BadSample(f"{what} '{path_or_list}': file not found")
  try:
    if path_or_list.endswith(".json"):
      with open(path_or_list, encoding="utf-8") as f:
        return np.asarray(json.load(f))
    return np.load(path_or_list, allow_pickle=False)
  except (ValueError, OSError, json.JSONDecodeError) as e:
    raise BadSample(f"{what} '{path_or_list}': cannot read ({e})") from e


def check_codes(codes, num_codes: int, what: str, expected_len: int | None = None) -> np.ndarray:
  """Validates an (N,) code array: integers in [0, num_codes), N > 0 (== expected_len if given)."""
  codes = np.asarray(codes)
  if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
    raise BadSample(f"{what}: expected a non-empty (N,) integer array, got {codes.dtype} {codes.shape}")
  if expected_len is not None and codes.size != expected_len:
    raise BadSample(f"{what}: expected {expected_len} codes, got {codes.size}")
  if codes.min() < 0 or codes.max() >= num_codes:
    raise BadSample(f"{what}: codes must lie in [0, {num_codes}), got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)


def check_features(features, feature_dim: int, what: str) -> np.ndarray:
  """Validates (T, feature_dim) finite float features with T > 0."""
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] != feature_dim:
    raise BadSample(f"{what}: expected features of shape (T > 0, {feature_dim}), got {features.shape}")
  if not np.issubdtype(features.dtype, np.floating) or not np.isfinite(features).all():
    raise BadSample(f"{what}: features must be finite floats")
  return features.astype(np.float32)


class SampleEncoder:
  """Turns batches of Records into tokenized samples.

  vocab: the id layout; text_tokenizer: the Qwen2 BPE (omnidiff_jax.vocab.load_tokenizer), used through
  omnidiff_jax.chat.build_chat; tokenizer: MediaTokenizer for media without precomputed codes (None: such
  media are bad samples); feature_dim: width D of user-speech features; image_grid: codes per image side by
  role (None: upstream's IMAGE_GRID; the demo's small pictures use a few codes).
  """

  def __init__(self, vocab: VocabLayout, text_tokenizer: tokenizers.Tokenizer,
               tokenizer: MediaTokenizer | None = None, feature_dim: int = 512,
               sample_rate: int = media_lib.SPEECH_SAMPLE_RATE, image_grid: dict[str, int] | None = None):
    self.vocab, self.text_tokenizer, self.tokenizer = vocab, text_tokenizer, tokenizer
    self.feature_dim, self.sample_rate = feature_dim, sample_rate
    self.image_grid = dict(IMAGE_GRID if image_grid is None else image_grid)
    if set(self.image_grid) != set(IMAGE_GRID):
      raise ValueError(f"image_grid must give the codes per side of both roles {sorted(IMAGE_GRID)}, got "
                       f"{self.image_grid}")

  def _need_tokenizer(self, item: MediaItem, what: str) -> MediaTokenizer:
    if self.tokenizer is None:
      raise BadSample(f"{what} '{item.name}': no precomputed codes/features and no media tokenizer configured")
    return self.tokenizer

  def _load_wave(self, item: MediaItem) -> np.ndarray:
    if item.array is not None:
      return media_lib.to_mono_resampled(item.array, item.sample_rate or 0, self.sample_rate, item.name)
    if item.path is None:
      raise BadSample("audio entry has neither a file nor precomputed codes/features")
    return media_lib.load_audio(item.path, self.sample_rate)

  def _prepare(self, record: Record):
    """Loads what has to be tokenized: ({(kind, key): input}, resolver) for one record."""
    pending = {}
    for i, item in enumerate(record.images):
      if item.codes is None:
        res = self.image_grid[item.role] * self._need_tokenizer(item, "image").image_downsample
        if item.array is None and item.path is None:
          raise BadSample(f"images[{i}]: neither a file nor precomputed codes")
        pending[("image", res, i)] = media_lib.load_image(
            item.array if item.array is not None else item.path, res, name=item.name)
    for i, item in enumerate(record.audios):
      if item.role == "assistant" and item.codes is None:
        self._need_tokenizer(item, "audio")
        pending[("speech", i)] = self._load_wave(item)
      elif item.role == "user" and item.features is None:
        self._need_tokenizer(item, "audio")
        pending[("features", i)] = self._load_wave(item)
    return pending

  def _tokenize(self, pending: dict) -> dict:
    """Runs the tokenizer once per kind (and image resolution) over all pending inputs of a batch."""
    out = {}
    groups: dict[tuple, list] = {}
    for key in pending:
      groups.setdefault(key[:2] if key[0] == "image" else key[:1], []).append(key)
    for group, keys in groups.items():
      inputs = [pending[k] for k in keys]
      if group[0] == "image":
        results = list(self.tokenizer.encode_image(np.stack(inputs)))
      elif group[0] == "speech":
        results = self.tokenizer.encode_speech(inputs)
      else:
        results = self.tokenizer.speech_features(inputs)
      out.update(zip(keys, results))
    return out

  def _build(self, record: Record, tokenized: dict) -> Sample:
    image_codes, speech, features = [], [], []
    for i, item in enumerate(record.images):
      grid = self.image_grid[item.role]
      raw = (tokenized[("image", grid * self.tokenizer.image_downsample, i)] if item.codes is None
             else _load_array(item.codes, "image codes"))
      image_codes.append(check_codes(raw, self.vocab.num_image_codes, f"images[{i}] codes '{item.name}'", grid ** 2))
    for i, item in enumerate(record.audios):
      if item.role == "assistant":
        raw = tokenized[("speech", i)] if item.codes is None else _load_array(item.codes, "speech codes")
        speech.append(check_codes(raw, self.vocab.num_audio_codes, f"audios[{i}] codes '{item.name}'"))
      else:
        raw = tokenized[("features", i)] if item.features is None else _load_array(item.features, "features")
        features.append(check_features(raw, self.feature_dim, f"audios[{i}] features '{item.name}'"))
    chat = build_chat(record.messages, self.vocab, self.text_tokenizer, images=image_codes,
                      audio_slot_counts=[len(f) for f in features], speech_codes=speech)
    ids = np.asarray(chat.ids, np.int32)
    feats = np.concatenate(features) if features else np.zeros((0, self.feature_dim), np.float32)
    labels = np.where(chat.target_mask, ids, IGNORE_ID).astype(np.int32)
    return {"input_ids": ids, "labels": labels, "task_id": np.int32(TASKS.index(record.task)),
            "feature_slots": np.asarray(chat.audio_slots, np.int32), "audio_features": feats}

  def encode_batch(self, records: Sequence[Record]) -> list[Sample | BadSample]:
    """One tokenized sample or the BadSample explaining the failure, per record (in order)."""
    prepared: list = []
    pending_all = {}
    for r, record in enumerate(records):
      try:
        pending = self._prepare(record)
      except BadSample as e:
        prepared.append(e)
        continue
      prepared.append(None)
      pending_all.update({(r,) + k: v for k, v in pending.items()})
    tokenized = self._tokenize({k[1:] + (k[0],): v for k, v in pending_all.items()}) if pending_all else {}
    results = []
    for r, (record, error) in enumerate(zip(records, prepared)):
      if error is not None:
        results.append(error)
        continue
      mine = {k[:-1]: v for k, v in tokenized.items() if k[-1] == r}
      try:
        results.append(self._build(record, mine))
      except BadSample as e:
        results.append(e)
    return results

  def encode(self, record: Record) -> Sample:
    """One record -> tokenized sample; raises BadSample."""
    result = self.encode_batch([record])[0]
    if isinstance(result, BadSample):
      raise result
    return result


def online_encoder(vocab: VocabLayout, data_cfg) -> SampleEncoder:
  """The SampleEncoder of `data.online`, for sources of kind 'manifest' / 'tfds' (tokenized inside the pipeline):
  the Qwen2 BPE of online.text_tokenizer and our MAGVIT-v2 / WhisperVQ / SenseVoice (omnidiff_jax.media_tokenizers)
  from online.{magvit,whisper_vq,sensevoice}_config and their converted weights ('' = random, with a warning)."""
  online = data_cfg.get("online")
  if online is None or not online.get("text_tokenizer"):
    raise ValueError("data sources of kind 'manifest' / 'tfds' are tokenized while training and need "
                     "data.online.text_tokenizer (the checkpoint's tokenizer.json or its directory); or tokenize "
                     "them first with tools/tokenize_data.py and use kind 'array_record'")
  from omnidiff_jax import vocab as vocab_lib
  from omnidiff_jax.media_tokenizers import MediaTokenizers
  vocab_lib.verify_tokenizer(vocab, online.text_tokenizer)
  media = MediaTokenizers.from_configs(
      magvit=online.magvit_config, whisper_vq=online.whisper_vq_config, sensevoice=online.sensevoice_config,
      magvit_weights=online.magvit or None, whisper_vq_weights=online.whisper_vq or None,
      sensevoice_weights=online.sensevoice or None, cmvn_file=online.cmvn, seed=online.seed)
  if media.feature_dim != data_cfg.feature_dim:
    raise ValueError(f"data.online.sensevoice_config gives user-speech features of width {media.feature_dim}, but "
                     f"data.feature_dim={data_cfg.feature_dim}")
  return SampleEncoder(vocab, vocab_lib.load_tokenizer(online.text_tokenizer), media, feature_dim=data_cfg.feature_dim)
