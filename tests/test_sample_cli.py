"""tools/sample.py end to end on tiny random models: text, image and speech inputs through the chat template,
tokenizer, MAGVIT-v2 and SenseVoice, the jitted sampler, then PNG (MAGVIT-v2) and WAV (GLM-4-Voice decoder)
outputs."""
import json
import pathlib

import numpy as np
import soundfile
from PIL import Image

import tiny_tokenizer
from tool_cli import run_tool

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The tiny model with the vocabulary of tests/tiny_tokenizer.py (text ids 0..399, 64 speech, 32 image codes).
VOCAB_FLAGS = ["--config.vocab.text_size=400", "--config.vocab.size=520", "--config.model.vocab_size=520"]


def _run(*args, vocab_flags=VOCAB_FLAGS):
  return run_tool("sample", *vocab_flags, *args)


def test_text_prompt_to_png_and_wav(tmp_path):
  tok_file = str(tmp_path / "tokenizer.json")
  tiny_tokenizer.build(tiny_tokenizer.layout()).save(tok_file)
  # seed 1: a random init whose samples contain image ids (seed 0 happens to emit none)
  t2i = _run("--task=t2i", "--text=a red bicycle", "--text=a cat", f"--tokenizer={tok_file}", "--steps=8", "--seed=1",
             "--magvit_config=configs/magvit.py:tiny", f"--png_dir={tmp_path / 'png'}",
             f"--out={tmp_path / 't2i.json'}")
  assert t2i.returncode == 0, t2i.stderr[-3000:]
  rows = json.loads((tmp_path / "t2i.json").read_text())["results"]
  assert len(rows) == 2
  with_images = [i for i, row in enumerate(rows) if len(row["image"])]
  assert with_images, "the (deterministic) random tiny model generated no image codes"
  for i in with_images:
    assert len(rows[i]["image"]) == 256
    assert np.asarray(Image.open(tmp_path / "png" / f"sample_{i}.png")).shape == (64, 64, 3)  # 16x16 codes, f=4
  # seed 2: emits speech codes (seed 0 emits none since the vocabulary padding changed the random init)
  tts = _run("--task=tts", "--text=hello there", f"--tokenizer={tok_file}", "--steps=6", "--region_len=12", "--seed=2",
             "--speech_decoder_config=configs/speech_decoder_tiny.py", f"--wav_dir={tmp_path / 'wav'}",
             f"--out={tmp_path / 'tts.json'}")
  assert tts.returncode == 0, tts.stderr[-3000:]
  row = json.loads((tmp_path / "tts.json").read_text())["results"][0]
  assert len(row["speech"]) > 0, "the (deterministic) random tiny model generated no speech codes"
  data, rate = soundfile.read(str(tmp_path / "wav" / "sample_0.wav"))
  assert rate == 22050 and len(data) > 0


def test_image_and_speech_inputs(tmp_path):
  """svqa on a tiny random model: --image through the tiny MAGVIT-v2, --wav through a random tiny SenseVoice."""
  from omnidiff_jax import config as cfglib
  from omnidiff_jax.models.magvit import params as magvit_ckpt
  from omnidiff_jax.config import load_config_file
  from omnidiff_jax.models.magvit import preprocess as image_processing
  from omnidiff_jax.vocab import VocabLayout
  vocab = VocabLayout.from_config(cfglib.vocab_config(text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS,
                                                      num_audio_codes=64, num_image_codes=8192, size=8680))
  tok_file = str(tmp_path / "tokenizer.json")
  tiny_tokenizer.build(vocab).save(tok_file)
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(tmp_path / "a.png")
  wave = 0.3 * np.sin(np.arange(6400) * 0.07).astype(np.float32)
  soundfile.write(tmp_path / "a.wav", np.stack([wave, wave], 1), 16000, subtype="FLOAT")  # stereo: averaged
  out = _run("--task=svqa", f"--wav={tmp_path / 'a.wav'}", f"--image={tmp_path / 'a.png'}", f"--tokenizer={tok_file}",
             "--magvit_config=configs/magvit.py:tiny", "--image_resolution=32", "--steps=4", "--region_len=10",
             "--config.vocab.num_image_codes=8192", "--config.vocab.size=8680", "--config.model.vocab_size=8680",
             f"--out={tmp_path / 'svqa.json'}", vocab_flags=VOCAB_FLAGS[:1])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "random SenseVoice" in out.stderr and "random MAGVIT-v2" in out.stderr
  row = json.loads((tmp_path / "svqa.json").read_text())["results"][0]
  prompt = np.asarray(row["prompt"])
  model = magvit_ckpt.random_model(load_config_file("configs/magvit.py:tiny").model, 0)
  codes = image_processing.encode_files(model, [str(tmp_path / "a.png")], 32, batch_size=1)[0]
  begin = np.flatnonzero(prompt == vocab.special_id("<|begin_of_image|>"))[0]
  np.testing.assert_array_equal(prompt[begin + 1:begin + 65], codes + vocab.image_offset)
  assert prompt[begin + 65] == vocab.special_id("<|end_of_image|>")
  frames = -(-((6400 - 400) // 160 + 1) // 2)   # tiny WavFrontend: 25 ms / 10 ms frames, LFR n = 2
  assert (prompt == vocab.special_id("<|context_of_audio|>")).sum() == frames + 4
  assert len(row["tokens"]) == 10 and row["tokens"][2] == vocab.special_id("<|begin_of_audio|>")   # int(0.2 * 10)


def test_inputs_are_checked_and_named(tmp_path):
  tok_file = str(tmp_path / "tokenizer.json")
  tiny_tokenizer.build(tiny_tokenizer.layout()).save(tok_file)
  out = _run("--task=asr", "--text=x", f"--tokenizer={tok_file}")
  assert out.returncode != 0 and "task asr takes wav" in out.stderr and "unexpected text" in out.stderr
  out = _run("--task=asr", f"--wav={tmp_path / 'missing.wav'}", f"--tokenizer={tok_file}")
  assert out.returncode != 0 and "missing.wav" in out.stderr
  out = _run("--task=vqa", "--text=q", f"--image={tmp_path / 'missing.png'}", f"--tokenizer={tok_file}")
  assert out.returncode != 0 and "missing.png" in out.stderr
  out = _run("--task=t2i", "--text=x", f"--tokenizer={tmp_path / 'missing.json'}")
  assert out.returncode != 0 and "missing.json" in out.stderr
