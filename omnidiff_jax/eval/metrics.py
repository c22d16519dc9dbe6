"""Benchmark metrics, each transcribed from the reference implementation cited above its block.

  WER / CER       upstream tools/compute-wer.py --char=1 (VITA-MLLM/Omni-Diffusion @ c4f4625), through jiwer
  MME             MME's eval_tool/calculation.py (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation
                  branch; read from its copy zjunlp/Deco eval_tool/calculation.py @ a3ccc15)
  POPE            POPE's evaluate.py (RUCAIBox/POPE; read from its copy CircleRadon/Osprey osprey/eval/pope/evaluate.py)
  Seed-2-Plus     multiple-choice letter parsing (SEED-Bench-2-Plus scores accuracy over A-D answers)
  CLIP-T / CLIP-I cosine of CLIP embeddings (Emu protocol), transformers CLIP from a local directory
"""
from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from typing import Callable, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# WER / CER. Upstream writes "<index> <text>" lines (tools/evaluate_asr.py: the hypothesis with '<|im_end|>',
# '<|endoftext|>' and '-' removed; tools/evaluate_libritts.py: Whisper's transcript and the reference through an
# English text normaliser, then \W+ -> ' ') and scores them with `compute-wer.py --char=1`: characterize() splits
# each line into tokens, normalize() upper-cases them (case-insensitive) and strips <tags>, Calculator sums the
# Levenshtein errors over utterances and divides by the reference tokens. Differences from upstream: a sample
# with no output is scored as an empty hypothesis (upstream's TTS script drops it), and newlines inside an
# output become spaces (upstream would split the line).

_PUNCTUATION = frozenset("!,?、。！，；？：「」︰『』《》")  # compute-wer.py `puncts`
_SPACES = frozenset(" \t\r\n")  # compute-wer.py `spacelist`
_ASR_STRIPPED = ("<|im_end|>", "<|endoftext|>", "-")  # evaluate_asr.py inference()


def clean_asr_output(text: str) -> str:
  """The hypothesis as upstream's ASR script writes it: special tokens and '-' removed, on one line."""
  for piece in _ASR_STRIPPED:
    text = text.replace(piece, "")
  return " ".join(text.splitlines())


def _strip_tags(token: str) -> str:
  """compute-wer.py stripoff_tags: drops every '<...>' span (an unclosed '<' drops the rest)."""
  out, i = [], 0
  while i < len(token):
    if token[i] == "<":
      while i < len(token) and token[i] != ">":
        i += 1
      i += 1
    else:
      out.append(token[i])
      i += 1
  return "".join(out)


def wer_tokens(text: str) -> list[str]:
  """compute-wer.py --char=1 tokens of one text: characterize() then normalize(cs=False, remove_tag=True).

  Other letters (category Lo: CJK, kana) are one token each; any other run of ASCII up to a space, a non-ASCII
  character or (for a run starting with '<') the closing '>' is one token, so English words stay whole.
  """
  tokens, i = [], 0
  while i < len(text):
    char = text[i]
    category = unicodedata.category(char)
    if char in _PUNCTUATION or category in ("Zs", "Cn") or char in _SPACES:
      i += 1
      continue
    if category == "Lo":
      tokens.append(char)
      i += 1
      continue
    stop, j = (">" if char == "<" else " "), i + 1
    while j < len(text) and not (ord(text[j]) >= 128 or text[j] in _SPACES or text[j] == stop):
      j += 1
    if j < len(text) and text[j] == ">":
      j += 1
    tokens.append(text[i:j])
    i = j
  tokens = [_strip_tags(token.upper()) for token in tokens]
  return [token for token in tokens if token]


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
  """Summed alignment counts: reference tokens N = hits + substitutions + deletions; rate = errors / N (0 when
  N = 0, as compute-wer.py)."""
  hits: int
  substitutions: int
  deletions: int
  insertions: int

  @property
  def reference_tokens(self) -> int:
    return self.hits + self.substitutions + self.deletions

  @property
  def rate(self) -> float:
    errors = self.substitutions + self.deletions + self.insertions
    return errors / self.reference_tokens if self.reference_tokens else 0.0


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: score every sample "
                     "(a failed one as an empty hypothesis)")


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
  """Corpus WER counts of compute-wer.py --char=1 (jiwer aligns the wer_tokens of each pair; the total edit
  distance and N equal upstream's, the split into S / D / I may differ where alignments tie)."""
  return _edit_counts(references, hypotheses, " ", "process_words")


def character_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
  """Corpus CER counts over the characters of the wer_tokens (joined without spaces: Chinese-style CER, the same
  case folding, punctuation and tag removal as the WER)."""
  return _edit_counts(references, hypotheses, "", "process_characters")


def _edit_counts(references: Sequence[str], hypotheses: Sequence[str], joiner: str, jiwer_fn: str) -> ErrorCounts:
  """jiwer's `jiwer_fn` over the wer_tokens of each pair joined by `joiner`."""
  import jiwer
  _check_pairs(references, hypotheses)
  if not references:
    return ErrorCounts(0, 0, 0, 0)
  out = getattr(jiwer, jiwer_fn)([joiner.join(wer_tokens(r)) for r in references],
                                 [joiner.join(wer_tokens(h)) for h in hypotheses])
  return ErrorCounts(out.hits, out.substitutions, out.deletions, out.insertions)


def english_normalizer() -> Callable[[str], str]:
  """The TTS-WER text normaliser: Whisper's EnglishTextNormalizer (PyPI whisper-normalizer; upstream uses
  WeTextProcessing's, which needs pynini) followed by upstream's \\W+ -> ' ' pass."""
  try:
    from whisper_normalizer.english import EnglishTextNormalizer
  except ImportError as e:
    raise ImportError("the TTS WER needs whisper-normalizer: pip install whisper-normalizer") from e
  normalize = EnglishTextNormalizer()
  return lambda text: re.sub(r"\W+", " ", normalize(text))


# ---------------------------------------------------------------------------------------------------------------
# MME (calculation.py, class calculate_metrics). Each results file lists two questions per image on consecutive
# lines "image \t question \t gt \t prediction"; parse_pred_ans: the lower-cased answer if it is 'yes' / 'no',
# else 'yes' / 'no' if its first 4 characters contain it ('yes' first), else 'other' (always wrong).
# Subtask score = 100 * (acc + acc+): acc over questions, acc+ = images with both answers right. The perception
# total (MME-P) sums the ten perception subtasks, the cognition total the four others.

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def clean_mme_output(text: str) -> str:
  """The prediction as upstream's MME script writes it (evaluate_imageqa_mme.py inference())."""
  return text.replace("<|im_end|>", "").replace("<|endoftext|>", "").replace("\n", "")


def mme_answer(prediction: str) -> str:
  """calculation.py parse_pred_ans on the lower-cased prediction: 'yes', 'no' or 'other'."""
  prediction = prediction.lower()
  if prediction in ("yes", "no"):
    return prediction
  head = prediction[:4]
  return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_subtask(ground_truths: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """acc, acc_plus, score (= 100 (acc + acc_plus)) and other_num of one subtask, questions in file order
  (pairs of consecutive questions share an image)."""
  if len(ground_truths) != len(predictions) or len(ground_truths) % 2:
    raise ValueError(f"MME scores question pairs: {len(ground_truths)} ground truths and {len(predictions)} "
                     "predictions (both must be the same even number)")
  truths = [t.lower().strip() for t in ground_truths]
  bad = sorted({t for t in truths if t not in ("yes", "no")})
  if bad:
    raise ValueError(f"MME ground truths must be yes / no, got {bad}")
  answers = [mme_answer(p) for p in predictions]
  correct = np.array([a == t for a, t in zip(answers, truths)])
  acc = float(correct.mean()) if len(correct) else 0.0
  acc_plus = float(correct.reshape(-1, 2).all(axis=1).mean()) if len(correct) else 0.0
  return dict(acc=acc, acc_plus=acc_plus, score=100 * acc + 100 * acc_plus,
              other_num=sum(a == "other" for a in answers))


def mme_scores(subtasks: dict[str, tuple[Sequence[str], Sequence[str]]]) -> dict[str, float]:
  """{subtask: (ground truths, predictions)} -> '<subtask>/acc', '/acc_plus', '/score', 'perception' (MME-P,
  over the perception subtasks present) and 'cognition' totals."""
  unknown = sorted(set(subtasks) - set(MME_PERCEPTION) - set(MME_COGNITION))
  if unknown:
    raise ValueError(f"unknown MME subtasks {unknown}; MME has {MME_PERCEPTION + MME_COGNITION}")
  out = {}
  for name, (truths, predictions) in subtasks.items():
    for key, value in mme_subtask(truths, predictions).items():
      out[f"{name}/{key}"] = value
  out["perception"] = sum(out[f"{n}/score"] for n in MME_PERCEPTION if n in subtasks)
  out["cognition"] = sum(out[f"{n}/score"] for n in MME_COGNITION if n in subtasks)
  return out


# ---------------------------------------------------------------------------------------------------------------
# POPE (evaluate.py): keep the answer's first sentence (up to the first '.'), drop ',', split on ' '; 'no' if
# 'No', 'not' or 'no' is a word, else 'yes'. Positive class 'yes'. Where a denominator is 0 (upstream divides by
# zero) the value is nan.

POPE_SPLITS = ("random", "popular", "adversarial")


def pope_answer(text: str) -> str:
  """POPE's yes / no reading of a free-form answer."""
  if "." in text:
    text = text.split(".")[0]
  words = text.replace(",", "").split(" ")
  return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _ratio(num: float, den: float) -> float:
  return num / den if den else float("nan")


def pope_scores(labels: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
  """accuracy, precision, recall, f1, yes_ratio and TP / FP / TN / FN of one POPE split. labels: 'yes' / 'no'
  (anything but 'no' counts as yes, as upstream); answers: the model's raw texts."""
  if len(labels) != len(answers):
    raise ValueError(f"{len(labels)} POPE labels but {len(answers)} answers")
  truth = np.array([label != "no" for label in labels])
  pred = np.array([pope_answer(a) == "yes" for a in answers])
  tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
  tn, fn = int(np.sum(~pred & ~truth)), int(np.sum(~pred & truth))
  precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
  return dict(accuracy=_ratio(tp + tn, len(labels)), precision=precision, recall=recall,
              f1=_ratio(2 * precision * recall, precision + recall), yes_ratio=_ratio(int(pred.sum()), len(labels)),
              TP=tp, FP=fp, TN=tn, FN=fn)


# ---------------------------------------------------------------------------------------------------------------
# Seed-2-Plus (SEED-Bench-2-Plus): four options A-D, accuracy of the parsed letter. The prompt asks for the
# option's letter; parse_choice reads a leading letter ("B", "(B)", "B.", "B) ...", "B text"), else "answer is B" /
# "option B", else the one option whose text the answer contains; None (wrong) otherwise.

CHOICE_LETTERS = ("A", "B", "C", "D")
_LEADING = re.compile(r"^\s*\(?(?:([A-D])(?:[).:,]|$)|([B-D])\s)")  # "A " is the article, not option A
_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-D])\b", re.IGNORECASE)


def parse_choice(text: str, choices: Sequence[str]) -> str | None:
  """The option letter an answer picks (A-D), or None. choices: the option texts in letter order."""
  match = _LEADING.match(text) or _STATED.search(text)
  if match:
    return next(letter for letter in match.groups() if letter).upper()
  lowered = text.lower()
  found = [letter for letter, choice in zip(CHOICE_LETTERS, choices) if choice and choice.lower() in lowered]
  return found[0] if len(found) == 1 else None


def choice_accuracy(answers: Sequence[str], predictions: Sequence[str | None]) -> float:
  """Share of predictions equal to the answer letter (None is wrong)."""
  if len(answers) != len(predictions):
    raise ValueError(f"{len(answers)} answers but {len(predictions)} predictions")
  return float(np.mean([p == a for a, p in zip(answers, predictions)])) if answers else 0.0


# ---------------------------------------------------------------------------------------------------------------
# CLIP-T (caption <-> generated image) and CLIP-I (generated <-> real image): cosine similarity of the L2-normalised
# CLIP projections, averaged over samples (Emu protocol, as the paper; its CLIP variant is not stated).

# Each group: a CLIP directory needs one of these files.
CLIP_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin"),
              ("preprocessor_config.json", "processor_config.json"))


class ClipScorer:
  """transformers CLIPModel + CLIPProcessor from a local directory (e.g. a copy of openai/clip-vit-large-patch14).

  Raises FileNotFoundError naming the missing files when `path` does not hold CLIP weights.
  """

  def __init__(self, path: str, device: str = "cpu"):
    missing = [" or ".join(group) for group in CLIP_FILES
               if not any(os.path.isfile(os.path.join(path or "", f)) for f in group)]
    if missing:
      raise FileNotFoundError(
          f"no CLIP weights at {path!r} (missing {'; '.join(missing)}): CLIP-T / CLIP-I need a local transformers "
          "CLIP directory, e.g. a download of openai/clip-vit-large-patch14; set config field clip_path to it")
    import torch
    from transformers import CLIPModel, CLIPProcessor
    self.torch, self.device = torch, device
    self.model = CLIPModel.from_pretrained(path).to(device).eval()
    self.processor = CLIPProcessor.from_pretrained(path)

  def _unit(self, features) -> np.ndarray:
    features = getattr(features, "pooler_output", features)  # transformers 5 returns a model output
    features = features / features.norm(dim=-1, keepdim=True)
    return features.float().cpu().numpy()

  def image_embeddings(self, images: Sequence) -> np.ndarray:
    """PIL images -> (N, E) unit CLIP image embeddings."""
    with self.torch.no_grad():
      pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
      return self._unit(self.model.get_image_features(pixel_values=pixels))

  def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
    """Texts -> (N, E) unit CLIP text embeddings (truncated to CLIP's 77 tokens)."""
    with self.torch.no_grad():
      tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
      tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
      return self._unit(self.model.get_text_features(**tokens))

  def clip_t(self, texts: Sequence[str], images: Sequence) -> np.ndarray:
    """(N,) cosine of each caption with its generated image."""
    return np.sum(self.text_embeddings(texts) * self.image_embeddings(images), axis=-1)

  def clip_i(self, generated: Sequence, real: Sequence) -> np.ndarray:
    """(N,) cosine of each generated image with its real image."""
    return np.sum(self.image_embeddings(generated) * self.image_embeddings(real), axis=-1)
