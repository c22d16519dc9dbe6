"""Audio and image loading with the upstream preprocessing; failures raise `BadSample`.

Audio: any format libsndfile reads (wav, flac, ogg, ...) via `soundfile`; several channels are averaged to
mono; other sample rates are resampled to `sample_rate` (16 kHz for SenseVoice and WhisperVQ) with
`scipy.signal.resample_poly` (polyphase FIR, Kaiser window beta 5, up/down = the reduced rate ratio), which
is exact for the common integer ratios (48k, 44.1k, 22.05k, 8k -> 16k) and anti-aliased.

Image (upstream `image_processor`, torchvision Resize + CenterCrop + ToTensor + Normalize(0.5, 0.5)):
RGB, shorter side resized to `resolution` with bicubic filtering, centre crop to resolution x resolution,
values mapped to [-1, 1].
"""
from __future__ import annotations

import io
import math
import os

import numpy as np
import PIL.Image
import scipy.signal
import soundfile

from omnidiff_jax.data.errors import BadSample

SPEECH_SAMPLE_RATE = 16_000


def to_mono_resampled(wave: np.ndarray, sample_rate: int, target_rate: int = SPEECH_SAMPLE_RATE,
                      name: str = "<array>") -> np.ndarray:
  """(samples,) or (samples, channels) int or float audio -> (samples',) float32 mono at target_rate."""
  wave = np.asarray(wave)
  if np.issubdtype(wave.dtype, np.integer):
    wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
  wave = wave.astype(np.float32)
  if wave.ndim == 2:
    wave = wave.mean(axis=1)
  if wave.ndim != 1:
    raise BadSample(f"audio '{name}': expected (samples,) or (samples, channels), got shape {wave.shape}")
  if wave.size == 0:
    raise BadSample(f"audio '{name}': no samples")
  if not np.isfinite(wave).all():
    raise BadSample(f"audio '{name}': contains NaN or Inf samples")
  if sample_rate <= 0:
    raise BadSample(f"audio '{name}': invalid sample rate {sample_rate}")
  if sample_rate != target_rate:
    g = math.gcd(int(sample_rate), int(target_rate))
    wave = scipy.signal.resample_poly(wave, target_rate // g, sample_rate // g).astype(np.float32)
  return wave


def read_audio(path: str) -> tuple[np.ndarray, int]:
  """Audio file -> (float32 (samples, channels), its sample rate), as read; BadSample names a missing or
  undecodable file."""
  if not os.path.isfile(path):
    raise BadSample(f"audio '{path}': file not found")
  try:
    return soundfile.read(path, dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise BadSample(f"audio '{path}': cannot decode ({e})") from e


def load_audio(path: str, target_rate: int = SPEECH_SAMPLE_RATE) -> np.ndarray:
  """Audio file -> (samples,) float32 mono at target_rate."""
  return to_mono_resampled(*read_audio(path), target_rate, name=path)


def preprocess_image(image: PIL.Image.Image, resolution: int) -> np.ndarray:
  """PIL image -> (resolution, resolution, 3) float32 in [-1, 1] (resize shorter side, centre crop)."""
  image = image.convert("RGB")
  w, h = image.size
  scale = resolution / min(w, h)
  size = (resolution, int(h * scale)) if w <= h else (int(w * scale), resolution)
  image = image.resize(size, PIL.Image.Resampling.BICUBIC)
  left = int(round((size[0] - resolution) / 2.0))
  top = int(round((size[1] - resolution) / 2.0))
  image = image.crop((left, top, left + resolution, top + resolution))
  return np.asarray(image, np.float32) / 127.5 - 1.0


def load_image(source: str | bytes | np.ndarray, resolution: int, name: str | None = None) -> np.ndarray:
  """Image file path, encoded bytes or (H, W, 3) uint8 array -> (resolution, resolution, 3) float32 in [-1, 1]."""
  name = name or (source if isinstance(source, str) else "<in-memory image>")
  if isinstance(source, np.ndarray):
    if source.ndim != 3 or source.shape[-1] not in (1, 3, 4) or source.dtype != np.uint8:
      raise BadSample(f"image '{name}': expected (H, W, 1|3|4) uint8, got {source.dtype} {source.shape}")
    image = PIL.Image.fromarray(source[..., 0] if source.shape[-1] == 1 else source)
    return preprocess_image(image, resolution)
  if isinstance(source, str) and not os.path.isfile(source):
    raise BadSample(f"image '{name}': file not found")
  try:
    with PIL.Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
      image.load()
      return preprocess_image(image, resolution)
  except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise BadSample(f"image '{name}': cannot decode ({e})") from e
