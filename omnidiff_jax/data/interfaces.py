"""Types shared by the data sources, and the plug-in point for the media tokenizers.

MediaTokenizer (implemented by the tokenizer issues, injected into `encode.SampleEncoder`): images ->
MAGVIT-v2 codes, assistant speech -> WhisperVQ codes, user speech -> features. Text goes through the Qwen2
BPE and the ChatML builder of omnidiff_jax.chat.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from omnidiff_jax import tasks

# Task names in id order (omnidiff_jax.tasks; a live view). Image captioning uses the 'vqa' id.
TASKS = tasks.NAMES
IGNORE_ID = -100  # label of positions that are not targets (HF ignore_index)
IMAGE_PLACEHOLDER = "<|image|>"
AUDIO_PLACEHOLDER = "<|audio|>"
ROLES = ("system", "user", "assistant")


@dataclasses.dataclass
class MediaItem:
  """One `<|image|>` or `<|audio|>` of a sample; at least one of path / array / codes / features is set.

  path: media file; array: media in memory (image: (H, W, C) uint8 or encoded bytes; audio: (samples[,
  channels]) int or float);
  sample_rate: of `array` (audio); codes: precomputed (N,) int codes (MAGVIT-v2 for images, WhisperVQ for
  assistant speech); features: precomputed (T, D) float user-speech features (one row per feature slot);
  role: 'user' or 'assistant' (the turn holding the placeholder; system counts as user).
  """
  path: str | None = None
  array: np.ndarray | bytes | None = None
  sample_rate: int | None = None
  codes: np.ndarray | None = None
  features: np.ndarray | None = None
  role: str = "user"

  @property
  def name(self) -> str:
    return self.path or "<in-memory>"


@dataclasses.dataclass
class Record:
  """One raw sample: ChatML messages plus its media in placeholder order. `where` is 'file:line' or similar."""
  messages: list[dict[str, str]]
  images: list[MediaItem]
  audios: list[MediaItem]
  task: str
  where: str


class MediaTokenizer(Protocol):
  """Batched media tokenizers (MAGVIT-v2, GLM-4-Voice WhisperVQ, SenseVoice)."""

  def encode_image(self, images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float32 in [-1, 1] -> (N, (H / 16) * (W / 16)) int codes in raster order."""
    ...

  def encode_speech(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """16 kHz mono float32 waves -> one (T_i,) int code array each (12.5 Hz)."""
    ...

  def speech_features(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """16 kHz mono float32 waves -> one (T_i, D) float array each (one row per feature slot).

    For Omni-Diffusion: the frozen SenseVoiceSmall encoder's output, T_lfr + 4 rows of 512 (reference
    section 2.2), so the train step only runs the trainable projector over stored features.
    """
    ...


Sample = dict[str, Any]  # a tokenized sample, see encode.SampleEncoder
