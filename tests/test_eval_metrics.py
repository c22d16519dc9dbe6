"""Benchmark metrics against upstream's compute-wer.py output, hand-computed values and the reference formulas."""
import json
import math

import numpy as np
import pytest

import eval_fakes
from omnidiff_jax.eval import metrics

# A fixed reference / hypothesis file pair (one "<id> <text>" line each in upstream's format). Upstream's
# numbers below come from running its scorer on these two files (VITA-MLLM/Omni-Diffusion @ c4f4625):
#   python tools/compute-wer.py --char=1 --v=1 ref.txt hyp.txt
# per utterance: N=9 S=2 D=1 I=1 | N=2 S=2 | N=6 D=1 I=1 | N=5 S=1 D=1 | N=5 D=5; Overall -> 55.56 % N=27 (15 errors)
REFERENCES = ["The quick brown fox, jumps over the lazy dog!", "hello world", "你好世界 mixed Text",
              "a <unk> tagged café line", "one two three four five"]
HYPOTHESES = ["the quick brown box jumps over lazy dog dog", "HELLO, WORLD?", "你好 世 mixed text extra",
              "a tagged cafe line", ""]
UPSTREAM_N = [9, 2, 6, 5, 5]
UPSTREAM_ERRORS = [4, 2, 2, 2, 5]


def _errors(counts: metrics.ErrorCounts) -> int:
  return counts.substitutions + counts.deletions + counts.insertions


def test_wer_equals_upstream_compute_wer_on_fixed_files():
  for ref, hyp, n, errors in zip(REFERENCES, HYPOTHESES, UPSTREAM_N, UPSTREAM_ERRORS):
    counts = metrics.word_errors([ref], [hyp])
    assert (counts.reference_tokens, _errors(counts)) == (n, errors), (ref, hyp)
  total = metrics.word_errors(REFERENCES, HYPOTHESES)
  assert total.reference_tokens == 27 and _errors(total) == 15
  assert round(100 * total.rate, 2) == 55.56


def test_wer_tokens_follow_characterize():
  # Punctuation is skipped only where a token starts; CJK letters are one token each; tags are stripped;
  # a non-ASCII letter that is not category Lo ends an ASCII run and forms its own token.
  assert metrics.wer_tokens("Hi, there !x <noise>ok 中文") == ["HI,", "THERE", "X", "OK", "中", "文"]
  assert metrics.wer_tokens("café") == ["CAF", "É"]
  assert metrics.wer_tokens("  ") == []


def test_wer_hand_computed_and_case_insensitive():
  # ref 4 words; hyp: one substitution (cat -> hat) and one insertion (now), upper case ignored: 2 / 4.
  counts = metrics.word_errors(["the cat sat down"], ["THE HAT SAT down now"])
  assert (counts.substitutions, counts.insertions, counts.rate) == (1, 1, 0.5)
  counts = metrics.word_errors(["the cat sat down"], ["cat sat down now"])
  assert (counts.deletions, counts.insertions, counts.rate) == (1, 1, 0.5)
  # An empty reference counts its insertions against N = 0 of its own, summed with the others (as upstream).
  counts = metrics.word_errors(["", "a b"], ["x y", "a b"])
  assert (counts.reference_tokens, counts.insertions, counts.rate) == (2, 2, 1.0)
  assert metrics.word_errors([""], [""]).rate == 0.0


def test_failed_sample_scores_as_empty_hypothesis_and_pairs_are_checked():
  assert metrics.word_errors(["one two"], [""]).rate == 1.0
  with pytest.raises(ValueError, match="empty hypothesis"):
    metrics.word_errors(["a", "b"], ["a"])


def test_cer_counts_characters_of_the_tokens():
  # "ABC DE" -> "ABCDE" vs "ABDDE": one substitution in 5 characters; punctuation-led and case do not count.
  counts = metrics.character_errors(["abc de"], ["ABD de"])
  assert (counts.reference_tokens, counts.substitutions, counts.rate) == (5, 1, 0.2)
  assert metrics.character_errors(["你好世界"], ["你好"]).rate == 0.5


def test_clean_asr_output_as_upstream():
  assert metrics.clean_asr_output("well-known<|im_end|><|endoftext|>") == "wellknown"
  assert metrics.clean_asr_output("two\nlines") == "two lines"


def test_english_normalizer_then_non_word_pass():
  normalize = metrics.english_normalizer()
  assert normalize("Mr. Smith didn't pay $20!") == normalize("mister smith did not pay 20 dollars")
  assert metrics.word_errors([normalize("Hello, world.")], [normalize("hello world")]).rate == 0.0


def _mme_lines(rows):
  return [f"{image}\t{question}\t{truth}\t{prediction}" for image, question, truth, prediction in rows]


def test_mme_hand_computed():
  # existence: image 1 both right; image 2 one right ("Yes," parses as yes; "maybe" is other).
  existence = [("1.jpg", "q", "Yes", "yes"), ("1.jpg", "q", "No", "No, it is not."),
               ("2.jpg", "q", "Yes", "Yes, there is"), ("2.jpg", "q", "No", "maybe")]
  # count: both images wrong on one answer; a bare "y" is other.
  count = [("3.jpg", "q", "Yes", "no"), ("3.jpg", "q", "No", "no"), ("4.jpg", "q", "Yes", "y"),
           ("4.jpg", "q", "No", "No")]
  # code_reasoning (cognition): all right.
  code = [("5.png", "q", "Yes", "Yes"), ("5.png", "q", "No", "no")]
  subtasks = {name: ([r[2] for r in rows], [r[3] for r in rows])
              for name, rows in (("existence", existence), ("count", count), ("code_reasoning", code))}
  scores = metrics.mme_scores(subtasks)
  assert scores["existence/acc"] == 0.75 and scores["existence/acc_plus"] == 0.5
  assert scores["existence/score"] == pytest.approx(125.0) and scores["existence/other_num"] == 1
  assert scores["count/acc"] == 0.5 and scores["count/acc_plus"] == 0.0 and scores["count/other_num"] == 1
  assert scores["perception"] == pytest.approx(125.0 + 50.0)
  assert scores["cognition"] == pytest.approx(200.0)
  assert _mme_lines(existence)[0] == "1.jpg\tq\tYes\tyes"


def test_mme_answer_parsing_and_errors():
  assert [metrics.mme_answer(p) for p in ("YES", "no.", "Nope", "I think yes", "", "the answer is no")] == [
      "yes", "no", "no", "other", "other", "other"]
  with pytest.raises(ValueError, match="even number"):
    metrics.mme_subtask(["yes"], ["yes"])
  with pytest.raises(ValueError, match="unknown MME subtasks"):
    metrics.mme_scores({"colour": (["yes", "no"], ["yes", "no"])})
  assert metrics.clean_mme_output("Yes<|im_end|>\n") == "Yes"


def test_pope_hand_computed(tmp_path):
  # A fixed answer file in POPE's JSONL layout.
  rows = [("yes", "Yes, there is a dog."), ("yes", "There is no dog. Yes."), ("no", "No"), ("no", "yes"),
          ("yes", "I see a dog, not a cat"), ("no", "There is not.")]
  path = tmp_path / "answers.jsonl"
  path.write_text("".join(json.dumps(dict(label=label, answer=answer)) + "\n" for label, answer in rows))
  loaded = [json.loads(line) for line in path.read_text().splitlines()]
  scores = metrics.pope_scores([r["label"] for r in loaded], [r["answer"] for r in loaded])
  # predictions: yes, no (first sentence has 'no'), no, yes, no ('not'), no -> TP 1, FN 2, TN 2, FP 1.
  assert (scores["TP"], scores["FN"], scores["TN"], scores["FP"]) == (1, 2, 2, 1)
  assert scores["accuracy"] == pytest.approx(3 / 6) and scores["precision"] == pytest.approx(1 / 2)
  assert scores["recall"] == pytest.approx(1 / 3) and scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (5 / 6))
  assert scores["yes_ratio"] == pytest.approx(2 / 6)
  assert math.isnan(metrics.pope_scores(["no"], ["no"])["precision"])


def test_parse_choice():
  choices = ["a red bus", "a cat", "the river", "42"]
  cases = {"B": "B", "(C) the river": "C", "D.": "D", "The answer is A": "A", "option b": "B",
           "I think it shows the river": "C", "C the river": "C", "A cat and a red bus": None, "none": None, "": None}
  for text, want in cases.items():
    assert metrics.parse_choice(text, choices) == want, text
  assert metrics.choice_accuracy(["A", "B", "C"], ["A", None, "D"]) == pytest.approx(1 / 3)


def test_clip_scores_equal_the_cosine_formula(tmp_path):
  import torch
  from PIL import Image
  model = eval_fakes.tiny_clip(tmp_path).eval()
  scorer = metrics.ClipScorer(str(tmp_path))
  rng = np.random.default_rng(0)
  images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)) for _ in range(2)]
  reals = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)) for _ in range(2)]
  texts = ["a red cat", "two dogs!"]
  # The formula: projected pooled outputs (text: the EOS position; image: the CLS token), L2-normalised, dot.
  with torch.no_grad():
    tokens = scorer.processor(text=texts, return_tensors="pt", padding=True)
    hidden = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    eos_index = tokens["attention_mask"].sum(-1) - 1
    text = model.text_projection(hidden.last_hidden_state[torch.arange(2), eos_index])

    def image_features(batch):
      pixels = scorer.processor(images=batch, return_tensors="pt")["pixel_values"]
      return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    unit = lambda x: (x / x.norm(dim=-1, keepdim=True)).numpy()  # noqa: E731
    want_t = np.sum(unit(text) * unit(image_features(images)), -1)
    want_i = np.sum(unit(image_features(images)) * unit(image_features(reals)), -1)
  # float32 on CPU: measured difference 0 here (the same kernels); bound 1e-6.
  np.testing.assert_allclose(scorer.clip_t(texts, images), want_t, atol=1e-6)
  np.testing.assert_allclose(scorer.clip_i(images, reals), want_i, atol=1e-6)
  np.testing.assert_allclose(scorer.clip_i(images, images), 1.0, atol=1e-6)


def test_clip_missing_weights_names_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="openai/clip-vit-large-patch14.*clip_path|model.safetensors"):
    metrics.ClipScorer(str(tmp_path / "absent"))
