"""Seed-2-Plus (SEED-Bench-2-Plus; paper Table 2: 34.5): four-option questions on charts, maps and webs; the
answer letter is parsed (metrics.parse_choice) and scored by accuracy (in %), overall and per image type.
Preset: cfg.preset (default 'mme': a short answer, 8 tokens)."""
from __future__ import annotations

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import Evaluator


class Seed2Plus(Evaluator):
  preset = "mme"
  metric = "accuracy"
  sources = (("json_path", "image_root"),)

  def read(self):
    return readers.seed2plus(self.field("json_path"), self.field("image_root"))

  def _metric(self, sample, output):
    ref = sample.reference
    return dict(answer=ref["answer"], type=ref["type"], output=output,
                choice=metrics.parse_choice(output, ref["choices"]))

  def decode(self, sample, tokens, prefix):
    output = self.text(tokens)
    return dict(output=output, files={}, metric=self._metric(sample, output))

  def failed(self, sample):
    return self._metric(sample, "")

  def score(self, records):
    rows = [r["metric"] for r in records]
    out = dict(accuracy=100 * metrics.choice_accuracy([r["answer"] for r in rows], [r["choice"] for r in rows]))
    for kind in sorted({r["type"] for r in rows if r["type"]}):
      subset = [r for r in rows if r["type"] == kind]
      out[f"{kind}/accuracy"] = 100 * metrics.choice_accuracy([r["answer"] for r in subset],
                                                              [r["choice"] for r in subset])
    return out
