"""TFDS datasets prepared locally in ArrayRecord format, read with `tfds.data_source`.

Prepare once (e.g. `tfds build librispeech --file_format=array_record`), then name the dataset in a data
source with kind 'tfds' (path = dataset name, split, data_dir) and an adapter turning its examples into
Records. Without TensorFlow installed, tensorflow_datasets handles Tensor and Text features only: its
Audio and Image feature codecs (librispeech, coco_captions) import TensorFlow, so those datasets need
`pip install tensorflow` (CPU) next to tensorflow_datasets, or a re-export with Tensor features.
Image fields may also be encoded bytes (e.g. read with decoders={'image': tfds.decode.SkipDecoding()}).
Adapters:
  asr      examples with 'speech' (16 kHz int16 audio, or its encoded file under librispeech/lazy_decode) and
           'text' (librispeech):
           user "Convert the speech to text.\\n<|audio|>", assistant the transcript
  caption  examples with 'image' (uint8 HxWx3) and 'captions': {'text': [...]} or 'caption' (coco_captions):
           user "Describe this image.\\n<|image|>", assistant the first caption
"""
from __future__ import annotations

import io

import numpy as np
import soundfile
import tensorflow_datasets as tfds

from omnidiff_jax.data.errors import BadSample
from omnidiff_jax.data.interfaces import MediaItem, Record

ASR_PROMPT = "Convert the speech to text.\n<|audio|>"
CAPTION_PROMPT = "Describe this image.\n<|image|>"
TFDS_SAMPLE_RATE = 16_000


def _text(value) -> str:
  if isinstance(value, (list, tuple, np.ndarray)):
    if len(value) == 0:
      raise BadSample("empty caption list")
    value = value[0]
  text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
  if not text.strip():
    raise BadSample("empty text")
  return text


def _speech(value, where: str) -> tuple[np.ndarray, int]:
  """A 'speech' feature -> ((samples,) int16, sample rate): decoded int16 samples at 16 kHz, or the encoded file
  (FLAC / WAV bytes) that `lazy_decode` configs (librispeech/lazy_decode) keep, decoded here."""
  if not isinstance(value, bytes):
    return np.asarray(value), TFDS_SAMPLE_RATE
  try:
    samples, rate = soundfile.read(io.BytesIO(value), dtype="int16")
  except (soundfile.LibsndfileError, RuntimeError) as e:
    raise BadSample(f"{where}: 'speech' bytes are not a readable audio file ({e})") from e
  return samples, rate


def asr_record(example: dict, where: str) -> Record:
  samples, rate = _speech(example["speech"], where)
  audio = MediaItem(array=samples, sample_rate=rate, role="user")
  messages = [{"role": "user", "content": ASR_PROMPT}, {"role": "assistant", "content": _text(example["text"])}]
  return Record(messages=messages, images=[], audios=[audio], task="asr", where=where)


def caption_record(example: dict, where: str) -> Record:
  captions = example["captions"]["text"] if "captions" in example else example["caption"]
  image = example["image"]
  image = MediaItem(array=image if isinstance(image, bytes) else np.asarray(image), role="user")
  messages = [{"role": "user", "content": CAPTION_PROMPT}, {"role": "assistant", "content": _text(captions)}]
  return Record(messages=messages, images=[image], audios=[], task="vqa", where=where)


ADAPTERS = {"asr": asr_record, "caption": caption_record}


def adapter(name: str):
  if name not in ADAPTERS:
    raise ValueError(f"unknown TFDS adapter {name!r}; known: {sorted(ADAPTERS)}")
  return ADAPTERS[name]


def data_source(name: str, split: str, data_dir: str | None = None):
  """Random-access source of a locally prepared ArrayRecord TFDS dataset."""
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    raise ModuleNotFoundError(
        f"TFDS {name}/{split} under {data_dir}: its features (Audio, Image) need TensorFlow to be read: "
        "`pip install tensorflow-cpu` next to tensorflow_datasets (see omnidiff_jax/data/tfds_source.py)",
        name="tensorflow") from e
