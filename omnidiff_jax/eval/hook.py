"""The training loop's eval hook: a small named eval set (an eval config) run on the current model every
train.eval.every steps (training.loop.train(eval_hook=...); tools/train.py builds it from cfg.eval.config).

Each call sweeps the eval config's benchmarks x settings into <workdir>/eval/step_<step>/ and returns
{'eval/<benchmark>/<setting>/<metric>': value} for every metric of every row (process 0; {} elsewhere).
"""
from __future__ import annotations

import os

import ml_collections
import tokenizers

from omnidiff_jax.eval import runner
from omnidiff_jax.eval.evaluators import Context
from omnidiff_jax.vocab import VocabLayout


class TrainEvalHook:
  """Callable (step, model) -> metrics; the networks an evaluator loads (MAGVIT-v2, CLIP, ...) load once."""

  def __init__(self, eval_cfg: ml_collections.ConfigDict, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer,
               mesh, workdir: str):
    runner.check_config(eval_cfg)
    self.cfg, self.mesh, self.workdir = eval_cfg, mesh, workdir
    self.ctx = Context(None, vocab, tokenizer, eval_cfg.networks, eval_cfg.seed)

  def __call__(self, step: int, model) -> dict[str, float]:
    self.ctx.model = model
    try:
      rows = runner.sweep(self.cfg, self.ctx, self.mesh, os.path.join(self.workdir, "eval", f"step_{step:08d}"))
    finally:
      self.ctx.model = None  # the training step donates these parameters next
    out = {}
    for row in rows:
      for key, value in row["metrics"].items():
        out[f"eval/{row['benchmark']}/{row['setting']}/{key}"] = float(value)
    return out
