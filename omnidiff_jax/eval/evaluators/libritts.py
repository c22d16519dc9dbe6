"""LibriTTS TTS (paper Table 1: WER 3.07; Table 3: 3.74 / 4.83 at 0.25L / 0.125L steps): preset tts_eval
(region int(3.5 x text tokens), steps half), speech codes -> our GLM-4-Voice decoder (22,050 Hz WAV) -> 16 kHz
(scipy resample_poly 320/441) -> an ASR model -> WER after the English normaliser and upstream's \\W+ -> ' '
pass on both sides (tools/evaluate_libritts.py). ASR: Whisper through transformers from networks.whisper_path
(upstream: whisper-large-v3). A sample with no speech codes, or whose decoding fails, is scored with an empty
hypothesis (upstream drops it)."""
from __future__ import annotations

import functools
import os

import numpy as np
import scipy.signal
import soundfile

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import ensure_parent
from omnidiff_jax.eval.evaluators.librispeech import LibriSpeech
from omnidiff_jax.models.speech_out.decode import SAMPLE_RATE
from omnidiff_jax.sampling import presets

WHISPER_FILES = ("config.json", "preprocessor_config.json")


class WhisperTranscriber:
  """transformers' ASR pipeline on a local Whisper directory; raises FileNotFoundError naming what is missing."""

  def __init__(self, path: str):
    missing = [f for f in WHISPER_FILES if not os.path.isfile(os.path.join(path or "", f))]
    if missing:
      raise FileNotFoundError(f"no Whisper model at {path!r} (missing {', '.join(missing)}): the TTS WER needs a "
                              "local transformers Whisper directory (upstream: openai/whisper-large-v3); set "
                              "networks.whisper_path")
    from transformers import pipeline
    self.pipe = pipeline("automatic-speech-recognition", model=path)

  def __call__(self, wave_16k: np.ndarray) -> str:
    """(samples,) float32 at 16 kHz -> the transcript."""
    return self.pipe({"raw": wave_16k, "sampling_rate": 16000}, return_timestamps=True)["text"].strip()


class LibriTTS(LibriSpeech):
  """Reads, exports (ref.txt / hyp.txt) and scores (WER, CER) as LibriSpeech; the hypothesis is the ASR transcript
  of the generated speech."""
  preset = "tts_eval"
  folder_reader = staticmethod(readers.libritts)

  @functools.cached_property
  def transcribe(self):
    return WhisperTranscriber(self.ctx.networks.whisper_path)

  @functools.cached_property
  def normalize(self):
    return metrics.english_normalizer()

  def decode(self, sample, tokens, prefix):
    codes = presets.split_outputs(tokens, self.ctx.vocab)["speech"]
    if not len(codes):
      raise ValueError("the region holds no speech codes")
    wave = self.ctx.speech_decoder.decode([codes], seed=self.ctx.seed)[0]
    path = ensure_parent(prefix + ".wav")
    soundfile.write(path, np.asarray(wave, np.float32), SAMPLE_RATE)
    transcript = self.transcribe(scipy.signal.resample_poly(wave, 320, 441).astype(np.float32))
    return dict(output=transcript, files={"wav": path}, metric=dict(
        reference=self.normalize(sample.reference["text"]), hypothesis=self.normalize(transcript)))

  def failed(self, sample):
    return dict(reference=self.normalize(sample.reference["text"]), hypothesis="")
