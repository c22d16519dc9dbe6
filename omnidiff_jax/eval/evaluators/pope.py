"""POPE (paper Table 2: 76.6): yes/no object questions on COCO val2014 over the random / popular / adversarial
splits, read as POPE's evaluate.py reads answers. Headline: the F1 averaged over the splits present (the paper
does not say which POPE number it reports; accuracy, precision, recall and yes-ratio are in the table too).
Preset: cfg.preset (default 'mme': a short answer, 8 tokens)."""
from __future__ import annotations

import numpy as np

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import Evaluator


class POPE(Evaluator):
  preset = "mme"
  metric = "f1"
  sources = (("pope_dir", "coco_images"),)

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
    out = {}
    for split in metrics.POPE_SPLITS:
      rows = [r["metric"] for r in records if r["metric"]["split"] == split]
      if rows:
        for key, value in metrics.pope_scores([r["label"] for r in rows], [r["answer"] for r in rows]).items():
          out[f"{split}/{key}"] = value
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
      values = [v for k, v in out.items() if k.endswith("/" + key)]
      out[key] = float(np.mean(values)) if values else float("nan")
    return out
