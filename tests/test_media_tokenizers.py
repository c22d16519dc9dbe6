"""omnidiff_jax.media_tokenizers: our MAGVIT-v2, WhisperVQ and SenseVoice behind the MediaTokenizer protocol, and
a manifest of PNG and WAV files -> tools/tokenize_data.py (tiny networks) -> ArrayRecord shards -> 2 training
steps on the 'mixture' pipeline."""
import json

import ml_collections
import numpy as np
import pytest
import soundfile
from PIL import Image

import tiny_tokenizer
from omnidiff_jax import config as cfglib
from omnidiff_jax.data import records
from omnidiff_jax.data.interfaces import TASKS
from omnidiff_jax.media_tokenizers import MediaTokenizers
from omnidiff_jax.vocab import VocabLayout
from tool_cli import run_tool

TINY = dict(magvit="configs/magvit.py:tiny", whisper_vq="configs/whisper_vq_tiny.py",
            sensevoice="configs/sensevoice_tiny.py")
# The tiny tokenizer's text ids with the tiny MAGVIT-v2's real 13-bit codebook (8192 image codes).
VOCAB = dict(text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64, num_image_codes=8192, size=8680)
VOCAB_FLAGS = [f"--config.vocab.{k}={v}" for k, v in VOCAB.items() if k != "num_specials"]


def _wave(seconds, rate=16000, seed=0):
  t = np.arange(int(rate * seconds)) / rate
  noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
  return (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def _lfr_frames(samples):  # tiny WavFrontend: 25 ms / 10 ms frames, LFR n = 2
  return -(-((samples - 400) // 160 + 1) // 2)


def test_the_three_networks_behind_the_protocol():
  tokenizers, again = (MediaTokenizers.from_configs(**TINY, seed=0) for _ in range(2))
  assert (tokenizers.image_downsample, tokenizers.feature_dim) == (4, 32)  # from the configs, nothing built yet
  images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  waves = [_wave(0.5), _wave(1.0, seed=1)]
  with pytest.warns(UserWarning, match="random MAGVIT-v2"):
    codes = tokenizers.encode_image(images)
  assert codes.shape == (3, 64) and codes.dtype == np.int32 and (codes >= 0).all() and (codes < 8192).all()
  with pytest.warns(UserWarning, match="random SenseVoice"):
    features = tokenizers.speech_features(waves)
  assert [f.shape for f in features] == [(_lfr_frames(len(w)) + 4, 32) for w in waves]
  with pytest.warns(UserWarning, match="random WhisperVQ"):
    speech = tokenizers.encode_speech(waves)
  assert [len(s) for s in speech] == [int(np.ceil(len(w) / 1280)) for w in waves]  # 12.5 Hz
  assert all(((s >= 0) & (s < 32)).all() for s in speech)  # the tiny codebook
  with pytest.warns(UserWarning):  # the same seed builds the same networks
    np.testing.assert_array_equal(again.encode_image(images), codes)
    np.testing.assert_array_equal(again.speech_features(waves)[1], features[1])


def _media_manifest(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
  soundfile.write(tmp_path / "q.wav", _wave(0.6), 16000, subtype="FLOAT")
  soundfile.write(tmp_path / "stereo22k.wav", np.stack([_wave(0.8, 22050, 1)] * 2, 1), 22050, subtype="FLOAT")

  def line(user, assistant, **media):
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
                       **media})

  lines = []
  for i in range(2):
    lines += [line(f"Generate an image based on the provided text description.\na cat {i}", "<|image|>",
                   images=["cat.png"]),
              line(f"What is shown in the picture? {i}\n<|image|>", "a cat", images=["cat.png"]),
              line("Convert the speech to text.\n<|audio|>", f"hello {i}", audios=["q.wav"]),
              line(f"Convert the text to speech.\nhello {i}", "<|audio|>", audios=["stereo22k.wav"])]
  (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
  return tmp_path / "m.jsonl"


def test_png_and_wav_manifest_to_shards_to_two_training_steps(tmp_path):
  from configs import stage1
  from omnidiff_jax.training import loop
  vocab = VocabLayout.from_config(cfglib.vocab_config(**VOCAB))
  tiny_tokenizer.build(vocab).save(str(tmp_path / "tokenizer.json"))
  run = run_tool("tokenize_data", f"--manifest={_media_manifest(tmp_path)}",
                 f"--tokenizer={tmp_path / 'tokenizer.json'}", f"--out_dir={tmp_path / 'shards'}",
                 "--config=configs/tiny.py", *VOCAB_FLAGS, "--on_error=error",
                 *(f"--{name}_config={spec}" for name, spec in TINY.items()))
  assert run.returncode == 0, run.stderr[-3000:]
  assert all(f"random {name}" in run.stderr for name in ("MAGVIT-v2", "WhisperVQ", "SenseVoice"))
  summary = json.loads(run.stdout[:run.stdout.index("report:")])
  assert (summary["written"], summary["skipped"]) == (8, 0)

  samples = [records.array_record_source(str(tmp_path / "shards"))[i] for i in range(8)]
  by_task = {}
  for s in samples:
    by_task.setdefault(TASKS[int(s["task_id"])], []).append(s)
  ids_in = lambda s, first, end: ((s["input_ids"] >= first) & (s["input_ids"] < end)).sum()  # noqa: E731
  image_ids = lambda s: ids_in(s, vocab.image_offset, vocab.size)  # noqa: E731
  speech_ids = lambda s: ids_in(s, vocab.audio_offset, vocab.image_offset)  # noqa: E731
  assert [image_ids(s) for s in by_task["t2i"]] == [256, 256]   # assistant image: 16 x 16 codes (64 px, f = 4)
  assert [image_ids(s) for s in by_task["vqa"]] == [1024, 1024]  # user image: 32 x 32 codes (128 px)
  assert [s["audio_features"].shape for s in by_task["asr"]] == [(_lfr_frames(9600) + 4, 32)] * 2
  assert [speech_ids(s) for s in by_task["tts"]] == [int(np.ceil(0.8 * 16000 / 1280))] * 2  # resampled to 16 kHz

  cfg = stage1.get_config("tiny")
  cfg.vocab, cfg.model.vocab_size = cfglib.vocab_config(**VOCAB), VOCAB["size"]
  cfg.train.steps, cfg.train.seq_len, cfg.optimizer.warmup_steps = 2, 1280, 1
  cfg.checkpoint.async_save, cfg.metrics.tensorboard = False, False
  cfg.data = ml_collections.ConfigDict(dict(
      source="mixture", seed=0, on_error="error", num_packing_bins=1, tail_pad_max=16, feature_rows=cfg.train.seq_len,
      feature_dim=32, read_threads=1, prefetch=0,
      sources=dict(media=dict(kind="array_record", path=str(tmp_path / "shards"), weight=1.0, split="", data_dir="",
                              adapter=""))))
  result = loop.train(cfg, str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])


def test_training_reads_the_png_and_wav_manifest_directly(tmp_path):
  """A 'manifest' source is tokenized inside the Grain pipeline by the media tokenizers of data.online."""
  from configs import stage1
  from omnidiff_jax.data import pipeline
  from omnidiff_jax.training import loop
  tiny_tokenizer.build(VocabLayout.from_config(cfglib.vocab_config(**VOCAB))).save(str(tmp_path / "tokenizer.json"))
  cfg = stage1.get_config("tiny")
  cfg.vocab, cfg.model.vocab_size = cfglib.vocab_config(**VOCAB), VOCAB["size"]
  cfg.train.steps, cfg.train.seq_len, cfg.optimizer.warmup_steps = 2, 1280, 1
  cfg.checkpoint.async_save, cfg.metrics.tensorboard = False, False
  online = cfg.data.online
  cfg.data = ml_collections.ConfigDict(dict(
      source="mixture", seed=0, on_error="error", num_packing_bins=1, tail_pad_max=16, feature_rows=cfg.train.seq_len,
      feature_dim=32, read_threads=1, prefetch=0, online=online,
      sources=dict(media=dict(kind="manifest", path=str(_media_manifest(tmp_path)), weight=1.0, split="",
                              data_dir="", adapter=""))))
  with pytest.raises(ValueError, match="data.online.text_tokenizer"):
    pipeline.make_source(cfg)
  cfg.data.online.text_tokenizer = str(tmp_path / "tokenizer.json")
  with pytest.warns(UserWarning) as caught:
    result = loop.train(cfg, str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])
  # The images and both kinds of speech went through the media tokenizers while training.
  assert all(any(f"random {name}" in str(w.message) for w in caught) for name in ("MAGVIT-v2", "WhisperVQ", "SenseVoice"))
