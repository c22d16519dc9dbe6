"""POPE (paper Table 2: 76.6): yes/no object questions on COCO val2014 over the random / popular / adversarial
splits, read as POPE's evaluate.py reads answers (metrics.pope_scores), reported in percent like the paper.
Preset: cfg.preset (default 'mme': a short answer, 8 tokens).

Headline (cfg.headline): 'f1' (default) = the F1 averaged over the splits present, or 'accuracy' = the averaged
accuracy; per-split accuracy, precision, recall, F1 and yes-ratio are in the table either way. Which number the
paper's 76.6 is has NOT been verified (checked 2026-11-30): the paper (arXiv 2603.06577, Table 2) prints one POPE
number without naming the metric or split, and upstream (VITA-MLLM/Omni-Diffusion, commit c4f4625) ships no POPE
script. The averaged F1 is the common convention (the OpenCompass VLM leaderboard documents it as POPE's overall
score), and the column's InstructBLIP entry (78.9) is the POPE figure LLaVA-1.5's comparison gives InstructBLIP,
so the paper most likely copied baselines from tables using that convention; this is an inference, not a source.
"""
from __future__ import annotations

import numpy as np

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import Evaluator

HEADLINES = ("f1", "accuracy")
PERCENT_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


class POPE(Evaluator):
  preset = "mme"
  metric = "f1"
  sources = (("pope_dir", "coco_images"),)

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.metric = cfg.get("headline") or "f1"

  @classmethod
  def check_section(cls, name, section, cfg):
    headline = section.get("headline") or "f1"
    if headline not in HEADLINES:
      raise ValueError(f"benchmarks.{name}.headline is {headline!r}; choose one of {HEADLINES} (averaged over the "
                       "splits)")

  def read(self):
    splits = tuple(self.cfg.get("splits") or metrics.POPE_SPLITS)
    return readers.pope(self.field("pope_dir"), self.field("coco_images"), splits)

  def decode(self, sample, tokens, prefix):
    answer = self.text(tokens)
    return dict(output=answer, files={}, metric=dict(split=sample.reference["split"], label=sample.reference["label"],
                                                    answer=answer))

  def failed(self, sample):
    return dict(split=sample.reference["split"], label=sample.reference["label"], answer="")

  def score(self, records):
    """Per split '<split>/<key>' (accuracy, precision, recall, f1, yes_ratio in percent; TP / FP / TN / FN
    counts) and each percent key averaged over the splits present."""
    out = {}
    for split in metrics.POPE_SPLITS:
      rows = [r["metric"] for r in records if r["metric"]["split"] == split]
      if rows:
        for key, value in metrics.pope_scores([r["label"] for r in rows], [r["answer"] for r in rows]).items():
          out[f"{split}/{key}"] = 100 * value if key in PERCENT_KEYS else value
    for key in PERCENT_KEYS:
      values = [v for k, v in out.items() if k.endswith("/" + key)]
      out[key] = float(np.mean(values)) if values else float("nan")
    return out
