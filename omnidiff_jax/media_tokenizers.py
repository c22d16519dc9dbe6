"""The media tokenizers, each built from its config and converted weights (random weights with a warning):

  ImageTokenizer      MAGVIT-v2 (configs/magvit.py): images -> codes
  SpeechTokenizer     GLM-4-Voice WhisperVQ (configs/whisper_vq.py): assistant speech -> codes
  SpeechFeaturizer    SenseVoice front end + frozen encoder (configs/sensevoice.py): user speech -> feature rows
  MediaTokenizers     the three behind omnidiff_jax.data.interfaces.MediaTokenizer, each built on first use

tools/tokenize_data.py tokenizes manifests with MediaTokenizers; omnidiff_jax.sampling.inputs builds prompts
with the same ImageTokenizer and SpeechFeaturizer. Waves are 16 kHz mono float32 (data.media.load_audio).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from omnidiff_jax.config import load_config_file

SAMPLE_RATE = 16_000


def _config(config: ml_collections.ConfigDict | str) -> ml_collections.ConfigDict:
  return load_config_file(config) if isinstance(config, str) else config


def _random_warning(what: str) -> None:
  warnings.warn(f"no {what} weights: a random {what} (tests and demos only)", stacklevel=3)


@dataclasses.dataclass
class ImageTokenizer:
  """MAGVIT-v2: model (a MagvitV2), batch_size images per jitted call."""
  model: object
  batch_size: int = 8

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | str, weights: str | None = None,
                  seed: int = 0) -> ImageTokenizer:
    """config: a MAGVIT config (or its file[:arg], e.g. 'configs/magvit.py:tiny'); weights: our converted file
    or a torch checkpoint (None: random weights, with a warning)."""
    from omnidiff_jax.models.magvit import params as magvit_params
    cfg = _config(config)
    if weights is None:
      _random_warning("MAGVIT-v2")
      return cls(magvit_params.random_model(cfg.model, seed), cfg.run.batch_size)
    return cls(magvit_params.load_magvit(cfg.model, weights), cfg.run.batch_size)

  @property
  def image_downsample(self) -> int:
    """Pixels per code along each side."""
    return self.model.downsample_factor

  @property
  def num_codes(self) -> int:
    return 2 ** self.model.cfg.z_channels

  def encode_image(self, images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float32 in [-1, 1] -> (N, (H / f) * (W / f)) int32 codes in raster order."""
    from omnidiff_jax.models.magvit import modeling as magvit
    return np.asarray(magvit.encode_batched(self.model, images, min(self.batch_size, len(images))), np.int32)

  def encode_files(self, paths: Sequence[str], resolution: int) -> np.ndarray:
    """Image files -> (N, (resolution / f) ** 2) int32 codes (shorter side resized, center-cropped, as upstream)."""
    from omnidiff_jax.models.magvit import preprocess
    return np.asarray(preprocess.encode_files(self.model, paths, resolution, min(self.batch_size, len(paths))),
                      np.int32)


@dataclasses.dataclass
class SpeechTokenizer:
  """GLM-4-Voice WhisperVQ: model (a WhisperVQEncoder), its Whisper front end and the `frontend` config section
  (segmenting, batch size, length limit)."""
  model: object
  frontend: object
  settings: ml_collections.ConfigDict

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | str, weights: str | None = None,
                  seed: int = 0) -> SpeechTokenizer:
    """config: a WhisperVQ config (or its file, e.g. 'configs/whisper_vq_tiny.py'); weights: our parameter file
    (tools/convert_checkpoint.py speech-in --kind=whisper_vq; None: random weights, with a warning)."""
    from omnidiff_jax.models.speech_in import frontend as speech_frontend
    from omnidiff_jax.models.speech_in import params as speech_in
    cfg = _config(config)
    model = speech_in.model_for("whisper_vq", cfg)
    if weights is None:
      _random_warning("WhisperVQ")
      speech_in.fill_random(model, seed)
    else:
      speech_in.load_params(model, weights)
    f = cfg.frontend
    frontend = speech_frontend.WhisperFrontend(n_mels=f.n_mels, n_fft=f.n_fft, hop_length=f.hop_length,
                                               sample_rate=f.sample_rate, pad_to_multiple_of=f.pad_to_multiple_of)
    return cls(model, frontend, f)

  def encode_speech(self, waves: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Mono float32 waves -> one (T_i,) int32 code array each (12.5 Hz). Raises BadAudioError (a ValueError)."""
    from omnidiff_jax.models.speech_in import whisper_vq
    s = self.settings
    codes = whisper_vq.tokenize(self.model, self.frontend, list(waves), sample_rate,
                                segment_seconds=s.segment_seconds, batch_size=s.batch_size,
                                max_seconds=s.max_seconds or None)
    return [np.asarray(c, np.int32) for c in codes]


@dataclasses.dataclass
class SpeechFeaturizer:
  """SenseVoice: the WavFrontend (fbank + LFR + CMVN) and the frozen encoder (a SenseVoiceEncoder). rng: the
  dither noise source (when the front end dithers)."""
  frontend: object
  encoder: object
  rng: np.random.Generator | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | str,
                  weights: str | Mapping[str, np.ndarray] | None = None, cmvn_file: str = "",
                  seed: int = 0) -> SpeechFeaturizer:
    """config: a speech-input config (configs/sensevoice.py: frontend and encoder sections, or its file);
    weights: our parameter file (tools/convert_checkpoint.py speech-in --kind=sensevoice), or a converted
    Omni checkpoint's SenseVoice tensors by HF name (checkpoints.load_extra), or None (random, with a
    warning); cmvn_file: SenseVoiceSmall's am.mvn (overrides frontend.cmvn_file). Raises
    CheckpointMismatchError (a ValueError) listing what does not fit."""
    from omnidiff_jax.models.speech_in import frontend as speech_frontend
    from omnidiff_jax.models.speech_in import params as speech_in
    cfg = _config(config)
    encoder = speech_in.model_for("sensevoice", cfg)
    if weights is None:
      _random_warning("SenseVoice")
      speech_in.fill_random(encoder, seed)
    elif isinstance(weights, str):
      speech_in.load_params(encoder, weights)
    else:
      speech_in.load_sensevoice(encoder, weights)
    frontend = speech_frontend.SenseVoiceFrontend.from_config(cfg.frontend, cmvn_file)
    if frontend.cmvn is None and weights is not None:
      warnings.warn("no CMVN file (SenseVoiceSmall's am.mvn): speech features differ from upstream's", stacklevel=2)
    return cls(frontend, encoder, np.random.default_rng(seed) if cfg.frontend.dither else None)

  @property
  def feature_dim(self) -> int:
    """Width of the feature rows (the encoder's output size)."""
    return self.encoder.cfg.output_size

  def frames(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A mono wave -> LFR frames (T_lfr, frontend.feature_dim) float32. Raises BadAudioError (a ValueError)."""
    return self.frontend(wave, sample_rate, self.rng)

  def speech_features(self, waves: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Mono float32 waves -> one (T_lfr + 4, feature_dim) float32 array each: the frozen encoder's output, one
    row per <|context_of_audio|> slot (reference section 2.2)."""
    from omnidiff_jax.models.speech_in import sensevoice
    encoded = sensevoice.encode_features(self.encoder, [self.frames(w, sample_rate) for w in waves])
    return [np.asarray(e, np.float32) for e in encoded]


class MediaTokenizers:
  """data.interfaces.MediaTokenizer over an ImageTokenizer, a SpeechTokenizer and a SpeechFeaturizer, each
  built by its factory on first use (a manifest with precomputed codes never builds a network)."""

  def __init__(self, image: Callable[[], ImageTokenizer], speech: Callable[[], SpeechTokenizer],
               features: Callable[[], SpeechFeaturizer], image_downsample: int, feature_dim: int):
    self._factories = dict(image=image, speech=speech, features=features)
    self._built = {}
    self.image_downsample, self.feature_dim = image_downsample, feature_dim

  @classmethod
  def from_configs(cls, *, magvit: str, whisper_vq: str, sensevoice: str, magvit_weights: str | None = None,
                   whisper_vq_weights: str | None = None, sensevoice_weights: str | None = None,
                   cmvn_file: str = "", seed: int = 0) -> MediaTokenizers:
    """From config files[:arg] (e.g. 'configs/magvit.py:tiny') and weight files (None: random, with a warning)."""
    magvit_cfg, sensevoice_cfg = load_config_file(magvit), load_config_file(sensevoice)
    return cls(lambda: ImageTokenizer.from_config(magvit_cfg, magvit_weights, seed),
               lambda: SpeechTokenizer.from_config(whisper_vq, whisper_vq_weights, seed),
               lambda: SpeechFeaturizer.from_config(sensevoice_cfg, sensevoice_weights, cmvn_file, seed),
               image_downsample=2 ** (len(magvit_cfg.model.encoder_ch_mult) - 1),  # MagvitV2.downsample_factor
               feature_dim=sensevoice_cfg.encoder.output_size)

  def _get(self, kind: str):
    if kind not in self._built:
      self._built[kind] = self._factories[kind]()
    return self._built[kind]

  def encode_image(self, images: np.ndarray) -> np.ndarray:
    return self._get("image").encode_image(images)

  def encode_speech(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    return self._get("speech").encode_speech(waves)

  def speech_features(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    return self._get("features").speech_features(waves)
