"""Data mixtures of the three curriculum stages (paper section 3.3 and Table 4) and the `data` config section.

Stage 1 (visual-language pre-alignment): T2I + image captioning + pure text.
Stage 2 (speech-vision-language joint alignment): stage 1 + ASR + TTS + speech QA + VQA.
Stage 3 (speech-driven visual interaction): spoken VQA + speech-to-image + SQA + VQA, and (Table 4's stage
columns) pure text, T2I, ASR and TTS; only captioning is left out.

The paper gives no mixing weights. Upstream concatenates its sources (ratio 1 each), so each source is
drawn in proportion to its size; the default weights below are Table 4's sizes in thousands of samples.
The speech sets are given in hours; they are converted at ~12.5 s per ASR utterance (1,354 h -> 390K)
and ~10 s per TTS utterance (5,108 h -> 1,840K): estimates, not paper numbers. Override per run with
`--config.data.sources.<name>.weight=...`.
"""
from __future__ import annotations

import os

import ml_collections

from omnidiff_jax import tasks

# source name -> default weight (thousands of samples, Table 4).
SOURCE_SIZES_K = {
    "text": 670,       # Tulu 3 SFT mixture
    "caption": 10_000,  # LAION-2B subset
    "t2i": 4_000,      # JourneyDB
    "asr": 390,        # LibriSpeech, Common Voice 17, GigaSpeech, People's Speech, VoxPopuli: 1,354 h
    "tts": 1_840,      # LibriTTS, GLOBE, Emilia: 5,108 h
    "sqa": 430,        # VoiceAssistant-400K (250K) + AudioQA-1.0M (180K)
    "vqa": 2_820,      # LLaVA-OneVision 820K + in-house 2,000K
    "svqa": 30,        # SDVI spoken VQA
    "s2i": 30,         # SDVI speech-to-image
}
STAGE_SOURCES = {
    1: ("t2i", "caption", "text"),
    2: ("t2i", "caption", "text", "asr", "tts", "sqa", "vqa"),
    3: ("svqa", "s2i", "sqa", "vqa", "text", "t2i", "asr", "tts"),
}
# The task of each source (TaskSpec.sources; for per-task losses and the synthetic stand-in): captioning is a
# VQA-shaped task.
SOURCE_TASKS = tasks.LiveMapping(lambda: {source: spec.name for spec in tasks.specs() for source in spec.sources})
# Sources whose samples carry user speech (feature rows); the others never do.
USER_SPEECH_SOURCES = tasks.LiveSequence(
    lambda: tuple(source for spec in tasks.specs() if spec.takes_user_speech for source in spec.sources))


def task_mixture(stage: int) -> dict[str, float]:
  """{task: weight} of a stage, summing the weights of sources with the same task (synthetic data)."""
  mixture: dict[str, float] = {}
  for name, weight in stage_mixture(stage).items():
    mixture[SOURCE_TASKS[name]] = mixture.get(SOURCE_TASKS[name], 0.0) + weight
  return mixture


def stage_mixture(stage: int) -> dict[str, float]:
  """{source name: weight} of a curriculum stage (1, 2 or 3)."""
  if stage not in STAGE_SOURCES:
    raise ValueError(f"stage must be one of {sorted(STAGE_SOURCES)}, got {stage!r}")
  return {name: float(SOURCE_SIZES_K[name]) for name in STAGE_SOURCES[stage]}


def data_config(stage: int, root: str = "data/tokenized", *, seq_len: int = 3072, seed: int = 0,
                feature_dim: int = 512) -> ml_collections.ConfigDict:
  """The `data` config section of a stage: ArrayRecord sources `<root>/<name>/` (tools/tokenize_data.py
  output) with the stage's weights. Stages with user speech carry seq_len feature rows per packed row (every
  feature slot is also a token, so this never limits packing); the others none."""
  mixture = stage_mixture(stage)
  feature_rows = seq_len if set(mixture) & set(USER_SPEECH_SOURCES) else 0
  sources = {name: ml_collections.ConfigDict(dict(kind="array_record", path=os.path.join(root, name),
                                                  weight=weight, split="", data_dir="", adapter=""))
             for name, weight in mixture.items()}
  return ml_collections.ConfigDict(dict(
      source="mixture", seed=seed, on_error="skip", num_packing_bins=1, tail_pad_max=16, pad_attention="masked",
      feature_rows=feature_rows, feature_dim=feature_dim, read_threads=4, prefetch=64,
      sources=ml_collections.ConfigDict(sources), online=online_config()))


def online_config(**overrides) -> ml_collections.ConfigDict:
  """The `data.online` section: how sources of kind 'manifest' / 'tfds' are tokenized while training
  (omnidiff_jax.data.encode.online_encoder). text_tokenizer: tokenizer.json or the checkpoint directory; the
  *_config fields: media-tokenizer config files[:arg] (configs/stages.py fills in ours); magvit, whisper_vq,
  sensevoice: converted weight files ('' = random networks, with a warning); cmvn: SenseVoiceSmall's am.mvn."""
  cfg = ml_collections.ConfigDict(dict(text_tokenizer="", magvit_config="", magvit="", whisper_vq_config="",
                                       whisper_vq="", sensevoice_config="", sensevoice="", cmvn="", seed=0))
  cfg.update(overrides)
  return cfg
