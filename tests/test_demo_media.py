"""The demo's built-in corpus and media networks (omnidiff_jax.demo): the quick config with fewer pictures and
steps (shapes only differ; the same code paths and model code run)."""
import filecmp
import json
import os

import numpy as np
import pytest

from configs import demo_media
from omnidiff_jax.data import manifest, media
from omnidiff_jax.data.errors import BadInputPolicy
from omnidiff_jax.demo import corpus, evaluators, media_training, speech


def small_config():
  cfg = demo_media.get_config("quick")
  cfg.corpus.update(train_images=64, heldout_images=16, chat_train=16, chat_heldout=8)
  cfg.magvit.train.steps = 100
  cfg.classifier.steps = 80
  return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(corpus dir, media dir, config, paths) of one corpus build and one media-network training run."""
  cfg = small_config()
  corpus_dir = str(tmp_path_factory.mktemp("corpus"))
  corpus.build_corpus(corpus_dir, cfg)
  media_dir = str(tmp_path_factory.mktemp("media"))
  paths = media_training.train_media_networks(corpus_dir, media_dir, cfg)
  return corpus_dir, media_dir, cfg, paths


def _all_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_corpus_is_deterministic_and_resumes(built, tmp_path):
  corpus_dir, _, cfg, _ = built
  again = str(tmp_path / "again")
  summary = corpus.build_corpus(again, cfg)
  files = _all_files(corpus_dir)
  assert files == _all_files(again)
  match, mismatch, errors = filecmp.cmpfiles(corpus_dir, again, files, shallow=False)
  assert not mismatch and not errors and len(match) == len(files)
  assert summary["counts"]["train"]["t2i"] == 64 and summary["counts"]["heldout"]["sqa"] == 8
  # Resume: an existing corpus.json with the same config is returned without touching any file.
  stamps = {f: os.stat(os.path.join(again, f)).st_mtime_ns for f in files}
  assert corpus.build_corpus(again, cfg) == summary
  assert stamps == {f: os.stat(os.path.join(again, f)).st_mtime_ns for f in files}


def test_manifests_validate_with_registry_prompts(built):
  corpus_dir, _, _, _ = built
  for split in corpus.SPLITS:
    for source in corpus.SOURCES:
      path = os.path.join(corpus_dir, "manifests", split, f"{source}.jsonl")
      records = list(manifest.iter_records(path, BadInputPolicy("error")))
      assert records, path
      for record in records:
        # The line's task is also what the registry infers from its prompt text and media.
        assert manifest.infer_task(record.messages, record.images, record.audios) == record.task
        assert all(os.path.isfile(item.path) for item in record.images + record.audios)


def test_heldout_pictures_are_new_draws(built):
  corpus_dir, _, _, _ = built
  train = corpus.read_labels(corpus_dir, "train")
  heldout = corpus.read_labels(corpus_dir, "heldout")
  positions = {(r["cx"], r["cy"], r["size"]) for r in train}
  assert not any((r["cx"], r["cy"], r["size"]) in positions for r in heldout)
  train_pixels = {pixels.tobytes() for pixels in corpus.load_pictures(corpus_dir, "train")[0]}
  assert not any(pixels.tobytes() in train_pixels for pixels in corpus.load_pictures(corpus_dir, "heldout")[0])


def test_pictures_are_near_the_centre(built):
  corpus_dir, _, cfg, _ = built
  side, jitter, (low, high) = cfg.corpus.image_size, cfg.corpus.centre_jitter, cfg.corpus.size_range
  for split in corpus.SPLITS:
    for row in corpus.read_labels(corpus_dir, split):
      assert abs(row["cx"] / side - 0.5) <= jitter + 1e-3 and abs(row["cy"] / side - 0.5) <= jitter + 1e-3, row
      assert low - 1e-3 <= row["size"] / side <= high + 1e-3, row
  cfg = small_config()
  cfg.corpus.size_range = (0.3, 0.49)
  with pytest.raises(ValueError, match="corpus.centre_jitter .* corpus.size_range"):
    corpus.build_corpus(str(os.path.join(corpus_dir, "unused")), cfg)


def test_chat_pool_questions_have_own_key_words_and_answers():
  pool = corpus.CHAT_POOL
  questions, answers = zip(*pool)
  assert len(pool) == len(set(questions)) == len(set(map(evaluators.normalise, answers))) == 32
  words = [set(evaluators.normalise(q).split()) for q in questions]
  for i, own in enumerate(words):
    others = set().union(*(w for j, w in enumerate(words) if j != i))
    assert own - others, f"{questions[i]!r} has no word of its own"


def _chat_answers(corpus_dir: str, split: str, source: str) -> list[str]:
  path = os.path.join(corpus_dir, "manifests", split, f"{source}.jsonl")
  records = manifest.iter_records(path, BadInputPolicy("error"))
  return [record.messages[-1]["content"].split("\n")[0] for record in records]   # sqa: text, then the speech


def test_chat_lines_ask_every_question_evenly_so_chance_is_low(built):
  corpus_dir, _, cfg, _ = built
  pool_answers = {answer for _, answer in corpus.CHAT_POOL}
  for split, count in (("train", cfg.corpus.chat_train), ("heldout", cfg.corpus.chat_heldout)):
    for source in ("text", "sqa"):
      answers = _chat_answers(corpus_dir, split, source)
      assert len(answers) == count and set(answers) <= pool_answers
      # At most len(pool) lines here: every question at most once, so the best constant answer scores 1 / count.
      assert len(set(answers)) == count
      exact = lambda ref, hyp: float(evaluators.normalise(ref) == evaluators.normalise(hyp))  # noqa: E731
      assert evaluators.best_constant(answers, exact) == pytest.approx(1 / count)
  # Full config: 512 training lines ask each of the 32 questions 16 times, 32 held-out lines each once.
  full = demo_media.get_config().corpus
  assert full.chat_train % len(corpus.CHAT_POOL) == 0 and full.chat_heldout == len(corpus.CHAT_POOL)


def test_fallback_synthesiser(tmp_path, monkeypatch):
  wave = speech.fallback("a red circle", speech.Voice(170, 50))
  assert wave.dtype == np.float32 and 0.5 < len(wave) / speech.SAMPLE_RATE < 3 and np.abs(wave).max() <= 0.9 + 1e-6
  np.testing.assert_array_equal(wave, speech.fallback("a red circle", speech.Voice(170, 50)))
  assert not np.array_equal(speech.fallback("a blue circle")[:4000], wave[:4000])
  monkeypatch.setattr(speech, "espeak_binary", lambda: None)
  assert speech.resolve("auto") == "fallback"
  with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng"):
    speech.resolve("espeak")
  cfg = small_config()
  cfg.corpus.update(train_images=16, heldout_images=16, chat_train=4, chat_heldout=4)
  summary = corpus.build_corpus(str(tmp_path), cfg)   # 'auto' without espeak-ng
  assert summary["synthesiser"] == "fallback"
  path = os.path.join(str(tmp_path), "manifests", "train", "asr.jsonl")
  assert len(list(manifest.iter_records(path, BadInputPolicy("error")))) == 16


def test_media_networks_quality_and_resume(built):
  corpus_dir, media_dir, cfg, paths = built
  with open(paths["report"]) as f:
    report = json.load(f)
  # Measured with this config (espeak-ng): held-out PSNR 18.5 dB, 97 of 256 codes used; classifier 15 of 16
  # held-out pictures right (0.9375), 64 of 64 speech codes used.
  assert report["magvit"]["heldout_psnr_db"] > 16.0
  assert report["magvit"]["codes_used"] >= 40
  assert report["classifier"]["heldout_accuracy"]["both"] >= 0.75
  assert report["whisper_vq"]["codes_used"] >= 48
  # Resume: nothing is retrained (the per-network reports, CPU seconds included, are read back).
  assert media_training.train_media_networks(corpus_dir, media_dir, cfg) == paths
  with open(paths["report"]) as f:
    assert json.load(f) == report


def test_classifier_loads_and_predicts(built):
  corpus_dir, _, _, paths = built
  from omnidiff_jax.demo.classifier import ShapeColourClassifier
  model = ShapeColourClassifier.load(paths["classifier_weights"])
  images, shapes, colours = corpus.load_pictures(corpus_dir, "heldout")
  predicted_shapes, predicted_colours = model.predict(images)
  assert predicted_shapes.shape == shapes.shape and predicted_colours.dtype == np.int32
  assert np.mean((predicted_shapes == shapes) & (predicted_colours == colours)) >= 0.75   # measured 0.9375
  with pytest.raises(ValueError, match="uint8 pictures"):
    model.predict(images.astype(np.float32))


def test_speech_codes_deterministic_and_separate_words(built):
  corpus_dir, _, _, paths = built
  from omnidiff_jax.media_tokenizers import SpeechTokenizer
  tokenizer = SpeechTokenizer.from_config(paths["whisper_vq_config"], paths["whisper_vq_weights"])
  voice = corpus.ASSISTANT_VOICE
  synthesiser = speech.resolve("auto")
  words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "cross"]
  codes = {w: tuple(tokenizer.encode_speech([speech.synthesise(w, voice, synthesiser)])[0]) for w in words}
  again = tokenizer.encode_speech([speech.synthesise("red", voice, synthesiser)])[0]
  assert tuple(again) == codes["red"]
  assert len(set(codes.values())) == len(words)


def test_media_tokenizers_encode_a_manifest_sample(built):
  corpus_dir, _, cfg, paths = built
  tokenizers = media_training.media_tokenizers(paths)
  path = os.path.join(corpus_dir, "manifests", "heldout", "svqa.jsonl")
  record = manifest.parse_line(path, 1, manifest.read_lines(path)[0])
  image = media.load_image(record.images[0].path, paths["image_resolution"])
  codes = tokenizers.encode_image(image[None])
  assert codes.shape == (1, 64) and 0 <= codes.min() and codes.max() < paths["num_image_codes"]
  question, answer = (media.load_audio(a.path) for a in record.audios)
  features = tokenizers.speech_features([question])[0]
  assert features.shape[1] == paths["feature_dim"] == tokenizers.feature_dim
  speech_codes = tokenizers.encode_speech([answer])[0]
  assert len(speech_codes) > 0 and speech_codes.max() < paths["num_audio_codes"]
