"""LibriSpeech ASR (paper Table 1: WER 7.05 on test-clean): preset asr_eval, WER / CER as upstream's
compute-wer.py --char=1 on the hypothesis cleaned as tools/evaluate_asr.py does; export() writes upstream's
ref.txt / hyp.txt ("<index> <text>" lines) for compute-wer.py itself. Reads the LibriSpeech folder
(cfg.root, cfg.split), a JSONL manifest (cfg.manifest, e.g. upstream's test.clean.jsonl) or the local TFDS
dataset (cfg.tfds_data_dir, cfg.tfds_name, cfg.tfds_split; its audio is written once as WAVs to cfg.wav_dir,
by default a folder under the system's temp dir)."""
from __future__ import annotations

import os
import tempfile

from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators.base import Evaluator


class LibriSpeech(Evaluator):
  preset = "asr_eval"
  metric = "wer"
  lower_is_better = True
  sources = (("root",), ("manifest",), ("tfds_data_dir",))
  folder_reader = staticmethod(readers.librispeech)  # (root, split) -> Samples
  tfds_name = "librispeech"

  def read(self):
    if self.cfg.get("manifest"):
      return readers.manifest(self.cfg.manifest)
    if self.cfg.get("tfds_data_dir"):
      return self.read_tfds(self.cfg.tfds_data_dir, self.cfg.get("tfds_name") or self.tfds_name,
                            self.cfg.get("tfds_split") or "test_clean", self.cfg.get("limit") or None)
    return self.folder_reader(self.field("root"), self.cfg.get("split", "test-clean"))

  def read_tfds(self, data_dir: str, name: str, split: str, limit: int | None):
    wav_dir = self.cfg.get("wav_dir") or os.path.join(tempfile.gettempdir(), "omnidiff_eval_wavs", name, split)
    return readers.librispeech_tfds(data_dir, wav_dir, split, name, limit)

  def decode(self, sample, tokens, prefix):
    hypothesis = metrics.clean_asr_output(self.text(tokens))
    return dict(output=hypothesis, files={}, metric=dict(reference=sample.reference["text"], hypothesis=hypothesis))

  def failed(self, sample):
    return dict(reference=sample.reference["text"], hypothesis="")

  def export(self, records, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    records = sorted(records, key=lambda r: r["id"])
    for name, key in (("ref.txt", "reference"), ("hyp.txt", "hypothesis")):
      with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        f.writelines(f"{i} {r['metric'][key]}\n" for i, r in enumerate(records))

  def score(self, records):
    refs = [r["metric"]["reference"] for r in records]
    hyps = [r["metric"]["hypothesis"] for r in records]
    return dict(wer=100 * metrics.word_errors(refs, hyps).rate, cer=100 * metrics.character_errors(refs, hyps).rate)
