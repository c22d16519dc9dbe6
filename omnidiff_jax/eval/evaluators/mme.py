"""MME (paper Table 2: MME-P 1216.7): preset mme (8 tokens / 8 steps, as tools/evaluate_imageqa_mme.py), the
prediction cleaned as upstream, scored as MME's calculation.py (acc + acc+ per subtask, perception total).
export() writes MME's result files (<subtask>.txt: image, question, answer, prediction per line), on which
calculation.py --results_dir runs too."""
from __future__ import annotations

import os

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import Evaluator


class MME(Evaluator):
  preset = "mme"
  metric = "perception"
  sources = (("root",),)

  def read(self):
    subtasks = self.cfg.get("subtasks")
    return readers.mme(self.field("root"), tuple(subtasks) if subtasks else None)

  def _metric(self, sample, prediction):
    ref = sample.reference
    return dict(subtask=ref["subtask"], image=ref["image_name"], question=ref["question"], answer=ref["answer"],
                prediction=prediction)

  def decode(self, sample, tokens, prefix):
    prediction = metrics.clean_mme_output(self.text(tokens))
    return dict(output=prediction, files={}, metric=self._metric(sample, prediction))

  def failed(self, sample):
    return self._metric(sample, "")

  def score(self, records):
    subtasks: dict[str, tuple[list, list]] = {}
    for r in records:
      truths, predictions = subtasks.setdefault(r["metric"]["subtask"], ([], []))
      truths.append(r["metric"]["answer"])
      predictions.append(r["metric"]["prediction"])
    return metrics.mme_scores(subtasks)

  def export(self, records, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: r["id"]):  # ids '<subtask>/<line>' keep each file's question order
      m = r["metric"]
      lines.setdefault(m["subtask"], []).append(f"{m['image']}\t{m['question']}\t{m['answer']}\t{m['prediction']}\n")
    for subtask, rows in lines.items():
      with open(os.path.join(out_dir, subtask + ".txt"), "w", encoding="utf-8") as f:
        f.writelines(rows)
