"""Evaluators without the backbone: decoding, failure records (scored, never dropped) and scores, with the
sampler replaced by fixed regions."""
import json

import ml_collections
import numpy as np
import pytest
import soundfile

import tiny_tokenizer
from configs.eval.common import base_config
from omnidiff_jax.eval import generate, metrics, runner
from omnidiff_jax.eval.evaluators import KINDS, Context


@pytest.fixture(scope="module")
def ctx():
  vocab = tiny_tokenizer.layout()
  return Context(None, vocab, tiny_tokenizer.build(vocab), base_config().networks)


def _text_region(ctx, text, length):
  ids = ctx.tokenizer.encode(text, add_special_tokens=False).ids + [ctx.vocab.im_end_id]
  return np.array((ids + [ctx.vocab.eos_id] * length)[:length], np.int32)


def _fixed_generate(regions):
  """A stand-in for generate.generate returning `regions[i]` cut to each request's region length."""
  def run(model, vocab, mesh, requests, **kwargs):
    tokens = [np.resize(regions[i], r.region_len) for i, r in enumerate(requests)]
    return tokens, [0.5] * len(requests), generate.Stats(region_tokens=sum(r.region_len for r in requests),
                                                         sampler_seconds=1.0)
  return run


class FakeDecoder:
  """The GLM-4-Voice decoder's interface: 2,205 samples at 22,050 Hz per speech code."""

  def decode(self, codes, seed=None):
    return [np.zeros(2205 * len(codes[0]), np.float32)]


def test_tts_sample_without_speech_codes_is_scored_as_empty_hypothesis(tmp_path, ctx, monkeypatch):
  chapter = tmp_path / "LibriTTS" / "test-clean" / "1" / "2"
  chapter.mkdir(parents=True)
  (chapter / "1_2_a.normalized.txt").write_text("Hello world.")
  (chapter / "1_2_b.normalized.txt").write_text("Good morning, Mr. Smith.")
  whisper = tmp_path / "whisper"  # the files check_config looks for; the transcriber is replaced below
  whisper.mkdir()
  for name in ("config.json", "preprocessor_config.json"):
    (whisper / name).write_text("{}")
  cfg = base_config()
  cfg.networks.whisper_path = str(whisper)
  cfg.benchmarks.tts = ml_collections.ConfigDict(dict(kind="libritts", root=str(tmp_path)))
  evaluator = runner.make_evaluators(cfg, ctx)["tts"]

  ctx.speech_decoder = FakeDecoder()
  heard = []
  evaluator.transcribe = lambda wave: heard.append(len(wave)) or "hello, world"
  speech = np.full(64, ctx.vocab.audio_offset + 3, np.int32)  # speech codes only
  text_only = _text_region(ctx, "no speech here", 64)
  monkeypatch.setattr(generate, "generate", _fixed_generate([speech, text_only]))
  samples = evaluator.samples()
  summary = runner.run_cell(runner.Cell("tts", "default", 0), evaluator, ctx, None, samples, {}, cfg, str(tmp_path))
  assert summary["samples"] == 2 and summary["failures"] == 1
  records = [json.loads(line) for line in open(tmp_path / "tts" / "default" / "shard_00000.jsonl")]
  ok, failed = records
  assert not ok["failed"] and soundfile.info(ok["files"]["wav"]).samplerate == 22050
  assert heard == [ok["region_len"] * 1600]  # the decoder's 22,050 Hz wave (2,205 per code) at 16 kHz
  assert ok["region_len"] == int(3.5 * len(ctx.tokenizer.encode("Hello world.", add_special_tokens=False).ids))
  assert failed["failed"] and "no speech codes" in failed["error"] and failed["metric"]["hypothesis"] == ""
  normalize = metrics.english_normalizer()
  want = metrics.word_errors([normalize("Hello world."), normalize("Good morning, Mr. Smith.")],
                             [normalize("hello, world"), ""])
  assert evaluator.score(records)["wer"] == pytest.approx(100 * want.rate)
  assert want.rate == pytest.approx(4 / 6)  # 0 errors on "hello world", 4 deletions of "good morning mister smith"


def test_asr_hypothesis_is_cleaned_as_upstream(ctx, tmp_path):
  cfg = ml_collections.ConfigDict(dict(kind="librispeech", root=str(tmp_path)))
  evaluator = KINDS["librispeech"]("ls", cfg, ctx)
  from omnidiff_jax.eval.readers import Sample
  sample = Sample("1-2-3", {"wav": "x.flac"}, {"text": "WELL KNOWN"})
  record = evaluator.decode(sample, _text_region(ctx, "well-known", 16), "")
  assert record["output"] == "wellknown" and record["metric"] == dict(reference="WELL KNOWN", hypothesis="wellknown")
  scores = evaluator.score([record, dict(metric=evaluator.failed(sample))])
  # "WELLKNOWN" vs "WELL KNOWN": 1 substitution + 1 deletion; the failed sample: 2 deletions -> 4 / 4.
  assert scores["wer"] == pytest.approx(100.0)


def test_pope_and_seed2plus_scores_from_records(ctx, tmp_path):
  pope = KINDS["pope"]("pope", ml_collections.ConfigDict(dict(kind="pope")), ctx)
  records = [dict(metric=dict(split=split, label=label, answer=answer))
             for split in ("random", "adversarial")
             for label, answer in (("yes", "Yes."), ("no", "No, there is not."), ("no", "yes"), ("yes", ""))]
  scores = pope.score(records)
  # per split: TP 2 (an empty answer reads as yes, as POPE's evaluate.py), FP 1, TN 1 -> precision 2/3, recall 1;
  # in percent, as the paper's 76.6.
  assert scores["random/precision"] == pytest.approx(200 / 3) and scores["adversarial/recall"] == 100.0
  assert scores["f1"] == pytest.approx(80.0) and scores["accuracy"] == pytest.approx(75.0)
  assert scores["random/TP"] == 2 and "popular/f1" not in scores
  assert pope.metric == "f1"
  by_accuracy = KINDS["pope"]("pope", ml_collections.ConfigDict(dict(kind="pope", headline="accuracy")), ctx)
  assert by_accuracy.metric == "accuracy"
  with pytest.raises(ValueError, match=r"benchmarks\.pope\.headline is 'recall'; choose one of \('f1', 'accuracy'\)"):
    KINDS["pope"].check_section("pope", ml_collections.ConfigDict(dict(kind="pope", headline="recall")), base_config())
  seed = KINDS["seed2plus"]("seed", ml_collections.ConfigDict(dict(kind="seed2plus")), ctx)
  from omnidiff_jax.eval.readers import Sample
  sample = Sample("q1", {}, {"answer": "B", "choices": ["1", "2", "3", "4"], "type": "maps"})
  right = seed.decode(sample, _text_region(ctx, "B", 8), "")
  wrong = seed.decode(sample, _text_region(ctx, "The answer is C", 8), "")
  scores = seed.score([right, wrong, dict(metric=seed.failed(sample))])
  assert (right["metric"]["choice"], wrong["metric"]["choice"]) == ("B", "C")
  assert scores["accuracy"] == pytest.approx(100 / 3) and scores["maps/accuracy"] == pytest.approx(100 / 3)


def test_tts_self_asr_counts_every_failure_and_empty_transcript(tmp_path, ctx, monkeypatch):
  """asr_model='self' with fixed regions and a stand-in for our model's ASR pass: a region without speech codes and
  a failed transcription are failures, an empty transcript is a full error; every sample is scored."""
  chapter = tmp_path / "LibriTTS" / "test-clean" / "1" / "2"
  chapter.mkdir(parents=True)
  texts = {"1_2_a": "Hello world.", "1_2_b": "Good morning.", "1_2_c": "No speech.", "1_2_d": "Bad audio."}
  for utterance, text in texts.items():
    (chapter / f"{utterance}.normalized.txt").write_text(text)
  cfg = base_config()
  cfg.benchmarks.tts = ml_collections.ConfigDict(dict(kind="libritts", root=str(tmp_path), asr_model="self"))
  evaluator = runner.make_evaluators(cfg, ctx)["tts"]
  ctx.speech_decoder = FakeDecoder()
  asked = []

  def our_asr(waves, mesh, run_cfg):  # every process's batched ASR pass, as SelfTranscriber
    asked.append({key: len(wave) for key, wave in waves.items()})
    said = {"1_2_a": "hello world", "1_2_b": "", "1_2_d": ValueError("transcribing the generated speech: too short")}
    return {key: said[key] for key in waves}

  evaluator.transcribe_batch = our_asr
  speech = np.full(64, ctx.vocab.audio_offset + 3, np.int32)
  monkeypatch.setattr(generate, "generate", _fixed_generate([speech, speech, _text_region(ctx, "none", 64), speech]))
  samples = evaluator.samples()
  summary = runner.run_cell(runner.Cell("tts", "default", 0), evaluator, ctx, None, samples, {}, cfg, str(tmp_path))
  lines = (tmp_path / "tts" / "default" / "shard_00000.jsonl").read_text().splitlines()
  records = {record["id"]: record for record in map(json.loads, lines)}
  assert summary["samples"] == 4 and summary["failures"] == 2
  assert [key for key in asked[0]] == ["1_2_a", "1_2_b", "1_2_d"]  # the region without speech codes is not heard
  assert asked[0]["1_2_a"] == records["1_2_a"]["region_len"] * 1600  # 22,050 Hz -> 16 kHz
  assert records["1_2_a"]["output"] == "hello world" and soundfile.info(records["1_2_a"]["files"]["wav"]).frames > 0
  assert not records["1_2_b"]["failed"] and records["1_2_b"]["metric"]["hypothesis"] == ""
  assert records["1_2_c"]["failed"] and "no speech codes" in records["1_2_c"]["error"]
  assert records["1_2_d"]["failed"] and "too short" in records["1_2_d"]["error"]
  normalize = metrics.english_normalizer()
  want = metrics.word_errors([normalize(texts[k]) for k in sorted(texts)], ["hello world", "", "", ""])
  assert want.rate == pytest.approx(6 / 8)  # 0 errors on "hello world", 6 deletions in the other three
  assert evaluator.score(list(records.values()))["wer"] == pytest.approx(100 * want.rate)
