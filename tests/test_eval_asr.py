"""Speech benchmarks through the whole eval path on the tiny random models. LibriSpeech ASR: WAVs -> random tiny
SenseVoice + projector -> asr_eval prompts, each row with its own region length int(0.2 x its prompt length).
LibriTTS with asr_model='self': tts_eval -> tiny speech decoder -> 16 kHz -> our model's ASR task -> WER, with
failures and empty transcripts scored, never dropped."""
import json

import jax
import ml_collections
import numpy as np
import pytest
import soundfile

import tiny_tokenizer
from configs.eval.common import base_config
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.eval import generate, metrics, runner
from omnidiff_jax.eval.evaluators import Context
from omnidiff_jax.vocab import VocabLayout


@pytest.mark.filterwarnings("ignore:no (sensevoice|projector) weights")
def test_librispeech_rows_keep_their_own_region_length(tmp_path):
  chapter = tmp_path / "LibriSpeech" / "test-clean" / "61" / "70968"
  chapter.mkdir(parents=True)
  durations = {"61-70968-0000": 0.4, "61-70968-0001": 1.0, "61-70968-0002": 1.6}
  rng = np.random.default_rng(0)
  for utt, seconds in durations.items():
    soundfile.write(str(chapter / f"{utt}.flac"), 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
  (chapter / "61-70968.trans.txt").write_text("".join(f"{utt} HE BEGAN A CONFUSED COMPLAINT\n" for utt in durations))
  backbone = cfglib.load_config_file("configs/eval/tiny_backbone.py")
  vocab = VocabLayout.from_config(backbone.vocab)
  cfg = base_config()
  cfg.batch_size, cfg.shard_size, cfg.prompt_bucket = 2, 8, 64
  cfg.networks.speech_in_config = "configs/sensevoice_tiny.py"
  cfg.benchmarks.librispeech = ml_collections.ConfigDict(dict(kind="librispeech", root=str(tmp_path), paper=7.05))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  ctx = Context(sharding.create_model(backbone.model, mesh, seed=0), vocab, tiny_tokenizer.build(vocab), cfg.networks)
  (row,) = runner.sweep(cfg, ctx, mesh, str(tmp_path / "run"))
  records = sorted(_records(tmp_path / "run"), key=lambda r: r["id"])
  assert [r["id"] for r in records] == sorted(durations) and not any(r["failed"] for r in records)
  lengths = [r["region_len"] for r in records]
  assert len(set(lengths)) == 3  # longer audio -> longer prompt -> longer region, in one sweep
  for r in records:
    assert r["region_len"] == max(int(0.2 * r["prompt_len"]), 1) and len(r["tokens"]) == r["region_len"]
    assert r["settings"]["steps"] == max(r["region_len"] // 2, 1) and r["settings"]["block_size"] == r["region_len"]
  assert row["metric"] == "wer" and row["samples"] == 3 and row["paper"] == 7.05 and row["value"] >= 0
  export = tmp_path / "run" / "librispeech" / "default" / "export"
  assert (export / "ref.txt").read_text().splitlines() == [f"{i} HE BEGAN A CONFUSED COMPLAINT" for i in range(3)]
  assert (export / "hyp.txt").read_text().splitlines() == [f"{i} {r['output']}" for i, r in enumerate(records)]


def _records(workdir):
  return [json.loads(line) for path in sorted(workdir.rglob("shard_*.jsonl")) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_speech_context():
  backbone = cfglib.load_config_file("configs/eval/tiny_backbone.py")
  vocab = VocabLayout.from_config(backbone.vocab)
  cfg = base_config()
  cfg.batch_size, cfg.shard_size, cfg.prompt_bucket = 2, 8, 64
  cfg.networks.speech_in_config = "configs/sensevoice_tiny.py"
  cfg.networks.speech_decoder_config = "configs/speech_decoder_tiny.py"
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  ctx = Context(sharding.create_model(backbone.model, mesh, seed=0), vocab, tiny_tokenizer.build(vocab), cfg.networks)
  return cfg, ctx, mesh


TTS_TEXTS = {"1_2_000000_000000": "The quick brown fox jumps over the lazy dog.",
             "1_2_000001_000000": "A red bus drives along a wet street at night.",
             "1_2_000002_000000": "Please response the input audio."}


@pytest.mark.filterwarnings("ignore:no (sensevoice|projector|speech decoder) weights")
def test_tts_wer_through_our_own_asr_task(tmp_path, tiny_speech_context, monkeypatch):
  cfg, ctx, mesh = tiny_speech_context
  chapter = tmp_path / "LibriTTS" / "test-clean" / "1" / "2"
  chapter.mkdir(parents=True)
  for utterance, text in TTS_TEXTS.items():
    (chapter / f"{utterance}.normalized.txt").write_text(text)
  cfg = cfg.copy_and_resolve_references()
  cfg.benchmarks.tts = ml_collections.ConfigDict(dict(kind="libritts", root=str(tmp_path), asr_model="self"))
  presets_run, real_generate = [], generate.generate

  def spy(model, vocab, mesh, requests, **kwargs):
    presets_run.append([(r.cfg, r.region_len, len(r.ids)) for r in requests])
    return real_generate(model, vocab, mesh, requests, **kwargs)

  monkeypatch.setattr(generate, "generate", spy)
  (row,) = runner.sweep(cfg, ctx, mesh, str(tmp_path / "run"))
  records = sorted(_records(tmp_path / "run"), key=lambda r: r["id"])
  assert [r["id"] for r in records] == sorted(TTS_TEXTS)  # every sample recorded, none dropped
  tts_rows, asr_rows = presets_run  # the TTS pass, then one batched ASR pass over the cell's generated speech
  assert len(tts_rows) == 3
  for sampler_cfg, region_len, prompt_len in asr_rows:  # asr_eval: int(0.2 x prompt length), half steps, one block
    assert region_len == max(int(0.2 * prompt_len), 1) and sampler_cfg.steps == max(region_len // 2, 1)
    assert sampler_cfg.block_size == region_len
  transcribed = [r for r in records if not r["failed"]]
  assert len(asr_rows) == len(transcribed) >= 1, [r["error"] for r in records]
  normalize = metrics.english_normalizer()
  for r in transcribed:
    assert soundfile.info(r["files"]["wav"]).samplerate == 22050
    assert r["metric"]["hypothesis"] == normalize(r["output"])
  for r in records:
    assert r["metric"]["reference"] == normalize(TTS_TEXTS[r["id"]])
    if r["failed"]:
      assert r["error"] and r["metric"]["hypothesis"] == ""
  assert row["samples"] == 3 and row["failures"] == sum(r["failed"] for r in records)
  want = metrics.word_errors([r["metric"]["reference"] for r in records], [r["metric"]["hypothesis"] for r in records])
  assert row["value"] == pytest.approx(100 * want.rate)


def test_tts_asr_model_errors_name_the_missing_config(tmp_path):
  cfg = base_config()
  cfg.benchmarks.tts = ml_collections.ConfigDict(dict(kind="libritts", root=str(tmp_path), asr_model="whisper"))
  with pytest.raises(ValueError, match=r"networks\.whisper_path=''.*config\.json.*benchmarks\.tts\.asr_model=self"):
    runner.check_config(cfg)
  cfg.benchmarks.tts.asr_model = "wav2vec"
  with pytest.raises(ValueError, match=r"benchmarks\.tts\.asr_model is 'wav2vec'; choose one of \('whisper', 'self'\)"):
    runner.check_config(cfg)
  cfg.benchmarks.tts.asr_model, cfg.checkpoint = "self", "/ckpt/omni"
  with pytest.raises(ValueError, match=r"networks\.sensevoice=''.*networks\.cmvn=''"):
    runner.check_config(cfg)
  cfg.networks.sensevoice, cfg.networks.cmvn = "/ckpt/sensevoice.safetensors", "/ckpt/am.mvn"
  runner.check_config(cfg)
  cfg.networks.speech_in_config = ""
  with pytest.raises(ValueError, match=r"networks\.speech_in_config"):
    runner.check_config(cfg)
