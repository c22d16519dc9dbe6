"""LibriTTS TTS (paper Table 1: WER 3.07; Table 3: 3.74 / 4.83 at 0.25L / 0.125L steps): preset tts_eval
(region int(3.5 x text tokens), steps half), speech codes -> our GLM-4-Voice decoder (22,050 Hz WAV) -> 16 kHz
(scipy resample_poly 320/441) -> an ASR model -> WER after the English normaliser and upstream's \\W+ -> ' '
pass on both sides (tools/evaluate_libritts.py). A sample with no speech codes, or whose decoding or
transcription fails, is scored with an empty hypothesis (upstream drops it).

The ASR model (benchmarks.<name>.asr_model):
  whisper  Whisper through transformers from networks.whisper_path (upstream: whisper-large-v3; the paper's number)
  self     our own model's ASR task: the 16 kHz speech -> SenseVoice features + the backbone's projector -> the
           backbone sampled with the asr_eval preset (the LibriSpeech evaluator's path, batched over the mesh and
           hosts), hypothesis cleaned as upstream's ASR script. Needs networks.speech_in_config and, with a real
           checkpoint, networks.sensevoice + networks.cmvn.
"""
from __future__ import annotations

import functools
import os
import tempfile

import ml_collections
import numpy as np
import scipy.signal
import soundfile

from omnidiff_jax.eval import generate, metrics, readers
from omnidiff_jax.eval.evaluators.base import ensure_parent
from omnidiff_jax.eval.evaluators.librispeech import LibriSpeech
from omnidiff_jax.models.speech_out.decode import SAMPLE_RATE
from omnidiff_jax.sampling import presets

WHISPER_FILES = ("config.json", "preprocessor_config.json")
ASR_MODELS = ("whisper", "self")
ASR_RATE = 16000


def missing_whisper_files(path: str) -> list[str]:
  """The files of a transformers Whisper directory that `path` lacks (all of them when path is empty)."""
  return [f for f in WHISPER_FILES if not os.path.isfile(os.path.join(path or "", f))]


def to_asr_rate(wave: np.ndarray) -> np.ndarray:
  """The decoder's (samples,) 22,050 Hz wave -> (samples * 320 / 441,) float32 at 16 kHz."""
  return scipy.signal.resample_poly(wave, 320, 441).astype(np.float32)


class WhisperTranscriber:
  """transformers' ASR pipeline on a local Whisper directory; raises FileNotFoundError naming what is missing."""

  def __init__(self, path: str):
    missing = missing_whisper_files(path)
    if missing:
      raise FileNotFoundError(f"no Whisper model at {path!r} (missing {', '.join(missing)}): the TTS WER needs a "
                              "local transformers Whisper directory (upstream: openai/whisper-large-v3); set "
                              "networks.whisper_path")
    from transformers import pipeline
    self.pipe = pipeline("automatic-speech-recognition", model=path)

  def __call__(self, wave_16k: np.ndarray) -> str:
    """(samples,) float32 at 16 kHz -> the transcript."""
    return self.pipe({"raw": wave_16k, "sampling_rate": ASR_RATE}, return_timestamps=True)["text"].strip()


class SelfTranscriber:
  """Our model's ASR task on 16 kHz waves, through the LibriSpeech evaluator (preset asr_eval: region
  int(0.2 x prompt length), steps half, one block) batched and sharded as the sweep's own cells. Every process
  must call it with the same waves."""

  def __init__(self, name: str, ctx):
    section = ml_collections.ConfigDict(dict(kind="librispeech", preset="asr_eval"))
    self.asr = LibriSpeech(f"{name}.asr", section, ctx)

  def __call__(self, waves: dict[str, np.ndarray], mesh, run_cfg) -> dict[str, str | Exception]:
    """{key: (samples,) float32 16 kHz wave} -> {key: cleaned transcript, or the error that stopped it}."""
    with tempfile.TemporaryDirectory(prefix="tts_asr_") as folder:
      samples = []
      for number, (key, wave) in enumerate(waves.items()):
        path = os.path.join(folder, f"{number:06d}.wav")
        soundfile.write(path, wave, ASR_RATE, subtype="FLOAT")
        samples.append(readers.Sample(key, {"wav": path}, {"text": ""}))
      _, errors, filled, _ = generate.generate_samples(self.asr, self.asr.ctx, mesh, samples, {}, run_cfg)
    out = {}
    for index, sample in enumerate(samples):
      if index in filled:
        out[sample.id] = self.asr.decode(sample, filled[index][0], "")["output"]
      else:
        out[sample.id] = ValueError(f"transcribing the generated speech (asr_model='self'): {errors[index]}")
    return out


class LibriTTS(LibriSpeech):
  """Reads, exports (ref.txt / hyp.txt) and scores (WER, CER) as LibriSpeech; the hypothesis is the ASR transcript
  of the generated speech."""
  preset = "tts_eval"
  folder_reader = staticmethod(readers.libritts)
  tfds_name = "libritts"

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.asr_model = cfg.get("asr_model") or "whisper"
    self.heard: dict[str, tuple[np.ndarray, str] | Exception] = {}  # asr_model='self': prepare() -> decode()

  def read_tfds(self, data_dir, name, split, limit):
    return readers.libritts_tfds(data_dir, split, name, limit)

  @classmethod
  def check_section(cls, name, section, cfg):
    asr_model = section.get("asr_model") or "whisper"
    use = (f"set --config.networks.whisper_path=<a local transformers Whisper directory, upstream: "
           f"openai/whisper-large-v3> (asr_model='whisper', the paper's protocol) or "
           f"--config.benchmarks.{name}.asr_model=self (our model's ASR task)")
    if asr_model not in ASR_MODELS:
      raise ValueError(f"benchmarks.{name}.asr_model is {asr_model!r}; choose one of {ASR_MODELS}: {use}")
    networks = cfg.networks
    if asr_model == "whisper":
      missing = missing_whisper_files(networks.whisper_path)
      if missing:
        raise ValueError(f"benchmark {name} transcribes its speech with Whisper (asr_model='whisper'), but "
                         f"networks.whisper_path={networks.whisper_path!r} lacks {', '.join(missing)}: {use}")
    elif not networks.get("speech_in_config"):
      raise ValueError(f"benchmark {name} transcribes with our model's ASR task (asr_model='self'), which needs "
                       "networks.speech_in_config (e.g. configs/sensevoice.py)")
    elif cfg.get("checkpoint") and not (networks.get("sensevoice") and networks.get("cmvn")):
      raise ValueError(f"benchmark {name} transcribes with our model's ASR task (asr_model='self'), which needs the "
                       f"SenseVoice weights networks.sensevoice={networks.get('sensevoice')!r} and its am.mvn "
                       f"networks.cmvn={networks.get('cmvn')!r} (both from SenseVoiceSmall); set them, or {use}")

  @functools.cached_property
  def transcribe(self):
    """Whisper: (samples,) 16 kHz wave -> transcript (asr_model='whisper')."""
    return WhisperTranscriber(self.ctx.networks.whisper_path)

  @functools.cached_property
  def transcribe_batch(self):
    """Our model's ASR task: ({key: 16 kHz wave}, mesh, run_cfg) -> {key: transcript or error} (asr_model='self')."""
    return SelfTranscriber(self.name, self.ctx)

  @functools.cached_property
  def normalize(self):
    return metrics.english_normalizer()

  def speech(self, tokens: np.ndarray) -> np.ndarray:
    """A filled region (G,) -> the decoder's (samples,) wave at 22,050 Hz; raises when it holds no speech codes."""
    codes = presets.split_outputs(tokens, self.ctx.vocab)["speech"]
    if not len(codes):
      raise ValueError("the region holds no speech codes")
    return np.asarray(self.ctx.speech_decoder.decode([codes], seed=self.ctx.seed)[0], np.float32)

  def prepare(self, samples, filled, mesh, run_cfg):
    """asr_model='self': decodes every sample's speech and transcribes it with our model, on every process (the
    transcription samples the backbone over the mesh); decode() then reads the results."""
    self.heard = {}
    if self.asr_model != "self":
      return
    waves = {}
    for index, tokens in filled.items():
      try:
        waves[samples[index].id] = self.speech(tokens)
      except Exception as e:  # noqa: BLE001: recorded by decode() as the sample's error, scored as empty
        self.heard[samples[index].id] = e
    transcripts = self.transcribe_batch({key: to_asr_rate(wave) for key, wave in waves.items()}, mesh, run_cfg)
    for key, wave in waves.items():
      transcript = transcripts[key]
      self.heard[key] = transcript if isinstance(transcript, Exception) else (wave, transcript)

  def decode(self, sample, tokens, prefix):
    if self.asr_model == "self":
      heard = self.heard.pop(sample.id)
      if isinstance(heard, Exception):
        raise heard
      wave, transcript = heard
    else:
      wave = self.speech(tokens)
      transcript = self.transcribe(to_asr_rate(wave))
    path = ensure_parent(prefix + ".wav")
    soundfile.write(path, wave, SAMPLE_RATE)
    return dict(output=transcript, files={"wav": path}, metric=dict(
        reference=self.normalize(sample.reference["text"]), hypothesis=self.normalize(transcript)))

  def failed(self, sample):
    return dict(reference=self.normalize(sample.reference["text"]), hypothesis="")
