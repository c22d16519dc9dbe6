"""Benchmark evaluators by kind (the eval config's benchmarks.<name>.kind)."""
from omnidiff_jax.eval.evaluators.base import Context, Evaluator
from omnidiff_jax.eval.evaluators.coco_t2i import CocoS2I, CocoT2I
from omnidiff_jax.eval.evaluators.librispeech import LibriSpeech
from omnidiff_jax.eval.evaluators.libritts import LibriTTS
from omnidiff_jax.eval.evaluators.mme import MME
from omnidiff_jax.eval.evaluators.pope import POPE
from omnidiff_jax.eval.evaluators.seed2plus import Seed2Plus

KINDS = {"librispeech": LibriSpeech, "libritts": LibriTTS, "mme": MME, "pope": POPE, "seed2plus": Seed2Plus,
         "coco_t2i": CocoT2I, "coco_s2i": CocoS2I}

__all__ = ["KINDS", "Context", "Evaluator"]
