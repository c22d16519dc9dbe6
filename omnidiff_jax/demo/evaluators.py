"""Evaluators of the demo's held-out manifests (one benchmark per task), registered in the eval package's KINDS as
'demo' (importing this module registers it).

Per task, by its outputs (omnidiff_jax.tasks):
  image (t2i, s2i)          the region's codes -> MAGVIT-v2 -> PNG; the shape / colour classifier labels the
                            generated picture and the reference picture; accuracy = both labels agree
                            (shape_accuracy, colour_accuracy beside it)
  speech only (tts)         code_accuracy: generated speech codes equal to the reference wave's WhisperVQ codes,
                            position by position over the longer of the two
  text (asr: WER; vqa, svqa, sqa, text: exact-match accuracy of the normalised answer; svqa / sqa score the text
                            part of their text + speech reply)
Chance, beside every metric: the score of the best constant output, i.e. the one reference answer (picture
labels, transcript, code sequence) that scores best when given for every sample; a model that ignores its input
gets at most this.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
from PIL import Image

from omnidiff_jax import chat
from omnidiff_jax.data import media
from omnidiff_jax.eval import metrics, readers
from omnidiff_jax.eval.evaluators import KINDS
from omnidiff_jax.eval.evaluators.base import Evaluator, ensure_parent


def normalise(text: str) -> str:
  """Lower case, punctuation dropped, single spaces."""
  return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def best_constant(references: Sequence, score_one) -> float:
  """The mean score over samples of the best single reference given as every sample's output."""
  candidates = list(dict.fromkeys(map(_hashable, references)))
  return max(float(np.mean([score_one(ref, _unhash(c)) for ref in references])) for c in candidates)


def _hashable(value):
  return tuple(value) if isinstance(value, (list, np.ndarray)) else value


def _unhash(value):
  return list(value) if isinstance(value, tuple) else value


def code_accuracy(reference: Sequence[int], generated: Sequence[int]) -> float:
  """Share of positions (over the longer sequence) where the two code sequences agree."""
  n = max(len(reference), len(generated), 1)
  return sum(a == b for a, b in zip(reference, generated)) / n


class DemoManifest(Evaluator):
  """One demo task on its held-out manifest. Config section fields: manifest, media_root (where its relative media
  paths start; default the manifest's folder), preset (the task), limit, grid
  (image codes per side), classifier (the shape / colour classifier file; image tasks), whisper_vq_config and
  whisper_vq (the speech tokenizer of the reference codes; tts), classifier_loader ('module:attribute' loading
  the classifier file, e.g. 'omnidiff_jax.demo.classifier:ShapeColourClassifier.load')."""
  sources = (("manifest", "preset"),)
  prompts_as_trained = True  # held out from the training manifests: prompt as training encodes them

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    outputs = self.spec.outputs
    self.kind = "image" if "image" in outputs else "speech" if outputs == ("audio",) else "text"
    self.metric = {"image": "accuracy", "speech": "code_accuracy", "text": "wer" if self.spec.name == "asr"
                   else "accuracy"}[self.kind]
    self.lower_is_better = self.metric == "wer"

  def read(self):
    return readers.manifest(self.field("manifest"), self.cfg.get("media_root") or None)

  @functools.cached_property
  def classifier(self):
    import importlib
    module, _, attribute = self.field("classifier_loader").partition(":")
    load = importlib.import_module(module)
    for name in attribute.split("."):
      load = getattr(load, name)
    return load(self.field("classifier"))

  @functools.cached_property
  def speech_tokenizer(self):
    from omnidiff_jax.media_tokenizers import SpeechTokenizer
    return SpeechTokenizer.from_config(self.field("whisper_vq_config"), self.cfg.get("whisper_vq") or None)

  def _labels(self, images: list[np.ndarray]) -> list[tuple[int, int]]:
    shapes, colours = self.classifier.predict(np.stack(images))
    return [(int(s), int(c)) for s, c in zip(shapes, colours)]

  def _reference_image(self, sample) -> np.ndarray:
    side = self.cfg.grid * self.ctx.image_tokenizer.image_downsample
    image = Image.open(sample.reference["image"]).convert("RGB").resize((side, side), Image.BICUBIC)
    return np.asarray(image, np.uint8)

  def decode(self, sample, tokens, prefix):
    out = chat.split_generated(tokens, self.ctx.vocab, self.ctx.tokenizer)
    if self.kind == "image":
      from omnidiff_jax.models.magvit import preprocess
      grid = self.cfg.grid
      if not len(out.image_codes):
        raise ValueError("the region holds no image codes")
      codes = np.resize(out.image_codes, grid * grid)  # cut, or repeated cyclically up to grid x grid
      path = ensure_parent(prefix + ".png")
      preprocess.decode_to_pngs(self.ctx.image_tokenizer.model, codes[None], [path], batch_size=1)
      generated, reference = self._labels([np.asarray(Image.open(path).convert("RGB")),
                                           self._reference_image(sample)])
      return dict(output="", files={"png": path}, metric=dict(generated=generated, reference=reference))
    if self.kind == "speech":
      reference = self.speech_tokenizer.encode_speech([media.load_audio(sample.reference["wav"])])[0].tolist()
      return dict(output=" ".join(map(str, out.speech_codes)), files={},
                  metric=dict(generated=out.speech_codes.tolist(), reference=reference))
    text = out.text.split("\n")[0] if self.spec.outputs[-1] == "audio" else out.text
    hypothesis = metrics.clean_asr_output(text) if self.spec.name == "asr" else text.strip()
    return dict(output=hypothesis, files={}, metric=dict(reference=sample.reference["text"], hypothesis=hypothesis))

  def failed(self, sample):
    if self.kind == "image":
      return dict(generated=None, reference=self._labels([self._reference_image(sample)])[0])
    if self.kind == "speech":
      return dict(generated=[], reference=self.speech_tokenizer.encode_speech(
          [media.load_audio(sample.reference["wav"])])[0].tolist())
    return dict(reference=sample.reference["text"], hypothesis="")

  def score(self, records):
    pairs = [(r["metric"]["reference"], r["metric"]["generated" if self.kind != "text" else "hypothesis"])
             for r in records]
    refs = [ref for ref, _ in pairs]
    if self.kind == "image":
      def parts(ref, gen):
        gen = gen or (-1, -1)
        return np.array([ref[0] == gen[0], ref[1] == gen[1], tuple(ref) == tuple(gen)], np.float64)
      got = np.mean([parts(ref, gen) for ref, gen in pairs], 0)
      return dict(accuracy=got[2], shape_accuracy=got[0], colour_accuracy=got[1],
                  chance=best_constant(refs, lambda ref, gen: parts(ref, gen)[2]))
    if self.kind == "speech":
      return dict(code_accuracy=float(np.mean([code_accuracy(r, g) for r, g in pairs])),
                  chance=best_constant(refs, code_accuracy))
    if self.metric == "wer":
      wer = lambda rs, hs: 100 * metrics.word_errors(rs, hs).rate  # noqa: E731
      chance = min(wer(refs, [c] * len(refs)) for c in dict.fromkeys(refs))
      return dict(wer=wer(refs, [h for _, h in pairs]), chance=chance)
    exact = lambda ref, hyp: float(normalise(ref) == normalise(hyp))  # noqa: E731
    return dict(accuracy=float(np.mean([exact(r, h) for r, h in pairs])), chance=best_constant(refs, exact))


KINDS["demo"] = DemoManifest
