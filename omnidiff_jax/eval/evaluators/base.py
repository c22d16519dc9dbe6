"""What every benchmark evaluator shares: the Context of loaded networks and the Evaluator interface.

An evaluator (one module per benchmark, big_vision style) reads its samples, names the sampling preset whose
prompts and lengths it uses (omnidiff_jax.tasks), turns one filled region into a record (output text and
files, metric inputs) and scores a list of records. The runner does the rest (prompts, batching, sharding,
resume, tables). A sample whose decoding fails is still scored: `failed()` gives its metric inputs (e.g. an
empty hypothesis for WER).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Any, Sequence

import ml_collections
import numpy as np
import tokenizers

from omnidiff_jax import tasks
from omnidiff_jax.eval.readers import Sample
from omnidiff_jax.sampling import presets
from omnidiff_jax.vocab import VocabLayout


@dataclasses.dataclass
class Context:
  """The backbone, its vocabulary and tokenizer, and the other networks an evaluator may need, loaded on first
  use from the eval config's `networks` section (paths empty = random weights with a warning, for demos and
  tests; clip_path and whisper_path have no random fallback)."""
  model: Any
  vocab: VocabLayout
  tokenizer: tokenizers.Tokenizer
  networks: ml_collections.ConfigDict
  seed: int = 0

  @functools.cached_property
  def image_tokenizer(self):
    from omnidiff_jax.sampling import inputs
    return inputs.load_image_tokenizer(self.networks.magvit_config, self.networks.magvit or None, self.seed)

  @functools.cached_property
  def speech_encoder(self):
    from omnidiff_jax.config import load_config_file
    from omnidiff_jax.sampling import inputs
    cfg = load_config_file(self.networks.speech_in_config)
    projector = getattr(self.model, "audio_projection", None)
    return inputs.load_speech_encoder(cfg, sensevoice_params=self.networks.sensevoice or None,
                                      projector=projector, cmvn_file=self.networks.cmvn, seed=self.seed)

  @functools.cached_property
  def speech_decoder(self):
    from omnidiff_jax.config import load_config_file
    from omnidiff_jax.models.speech_out import decode, params
    cfg = load_config_file(self.networks.speech_decoder_config)
    if self.networks.speech_decoder:
      return params.load_decoder(cfg, self.networks.speech_decoder)
    warnings.warn("no speech decoder weights (networks.speech_decoder): a random GLM-4-Voice decoder", stacklevel=2)
    return decode.SpeechDecoder(cfg, *decode.build_models(cfg, seed=self.seed))

  @functools.cached_property
  def clip(self):
    from omnidiff_jax.eval import metrics
    return metrics.ClipScorer(self.networks.clip_path)


class Evaluator:
  """One benchmark. Subclasses set `preset` (default sampling preset), `metric` (the headline key of score())
  and `lower_is_better`, and implement samples(), decode() and score()."""
  preset: str = ""
  metric: str = ""
  lower_is_better: bool = False
  # Alternative groups of reader fields; one group must be set (checked by runner.check_config before loading).
  sources: tuple[tuple[str, ...], ...] = ()
  # Prompts as the training data encodes them (sampling.inputs.build_prompts(as_trained=True)) rather than as
  # upstream's inference builds them: for benchmarks held out from our own training manifests (the demo).
  prompts_as_trained: bool = False

  def __init__(self, name: str, cfg: ml_collections.ConfigDict, ctx: Context):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.preset = cfg.get("preset") or self.preset
    if self.preset not in presets.PRESETS:
      raise ValueError(f"benchmarks.{name}.preset: unknown preset {self.preset!r}; choose one of "
                       f"{sorted(presets.PRESETS)}")
    self.spec = tasks.presets()[self.preset][0]

  @classmethod
  def check_section(cls, name: str, section: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict) -> None:
    """Checks the benchmark's own config fields (and the networks it needs) before anything is loaded; raises
    ValueError naming the field to set. runner.check_config calls it."""

  def field(self, name: str):
    """A required reader field of the benchmark's config section; raises ValueError naming it when empty."""
    value = self.cfg.get(name)
    if not value:
      raise ValueError(f"config field benchmarks.{self.name}.{name} is empty; set "
                       f"--config.benchmarks.{self.name}.{name}=... (see configs/eval/common.py)")
    return value

  def samples(self) -> list[Sample]:
    """The benchmark's samples (cfg.limit: the first N), in a fixed order."""
    samples = self.read()
    limit = self.cfg.get("limit")
    return samples[:limit] if limit else samples

  def read(self) -> list[Sample]:
    raise NotImplementedError

  def prompt_inputs(self, samples: Sequence[Sample]) -> dict[str, list[str]]:
    """build_prompts keyword inputs (texts / images / wavs) of these samples, as the preset takes them."""
    names = {"text": "texts", "image": "images", "wav": "wavs"}
    out = {}
    for kind in self.spec.inference_inputs:
      missing = [s.id for s in samples if kind not in s.inputs]
      if missing:
        raise ValueError(f"preset {self.preset!r} takes a {kind} per sample; samples {missing[:5]} have none")
      out[names[kind]] = [s.inputs[kind] for s in samples]
    return out

  def prepare(self, samples: Sequence[Sample], filled: dict[int, np.ndarray], mesh, run_cfg) -> None:
    """Runs on every process after the cell's sampling, before decode() (process 0 only): the place for decoding
    work that samples the model itself, which every process must take part in. filled: {sample index: region
    tokens (G_i,)} of the samples that were sampled; run_cfg: the eval config."""

  def decode(self, sample: Sample, tokens: np.ndarray, prefix: str) -> dict[str, Any]:
    """One filled region (G,) -> {'output': text, 'files': {kind: path}, 'metric': metric inputs}; files are
    written at `prefix` + extension. Raises on failure (the runner records the error and calls failed())."""
    raise NotImplementedError

  def failed(self, sample: Sample) -> dict[str, Any]:
    """Metric inputs of a sample that produced no usable output."""
    raise NotImplementedError

  def score(self, records: Sequence[dict]) -> dict[str, float]:
    """Metrics over records (each with 'metric' as decode() / failed() returned it); includes self.metric."""
    raise NotImplementedError

  def export(self, records: Sequence[dict], out_dir: str) -> None:
    """Writes the records in the benchmark's own result format (for its reference scorer), if it has one."""

  def text(self, tokens: np.ndarray) -> str:
    """The text of a filled region: ids before the first <|im_end|> / <|endoftext|>, decoded."""
    ids = presets.split_outputs(tokens, self.ctx.vocab)["text"]
    return self.ctx.tokenizer.decode(ids.tolist(), skip_special_tokens=False)


def ensure_parent(path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
