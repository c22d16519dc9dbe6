"""tools/sample.py end to end on tiny random models: a text prompt through the chat template and tokenizer,
the jitted sampler, then PNG (MAGVIT-v2) and WAV (GLM-4-Voice decoder) outputs."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import soundfile
from PIL import Image

import tiny_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The tiny model with the vocabulary of tests/tiny_tokenizer.py (text ids 0..399, 64 speech, 32 image codes).
VOCAB_FLAGS = ["--config.vocab.text_size=400", "--config.vocab.size=520", "--config.model.vocab_size=520"]


def _run(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, str(ROOT / "tools" / "sample.py"), *VOCAB_FLAGS, *args],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


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
  tts = _run("--task=tts", "--text=hello there", f"--tokenizer={tok_file}", "--steps=6", "--region_len=12",
             "--speech_decoder_config=configs/speech_decoder_tiny.py", f"--wav_dir={tmp_path / 'wav'}",
             f"--out={tmp_path / 'tts.json'}")
  assert tts.returncode == 0, tts.stderr[-3000:]
  row = json.loads((tmp_path / "tts.json").read_text())["results"][0]
  assert len(row["speech"]) > 0, "the (deterministic) random tiny model generated no speech codes"
  data, rate = soundfile.read(str(tmp_path / "wav" / "sample_0.wav"))
  assert rate == 22050 and len(data) > 0


def test_media_tasks_need_prompt_ids(tmp_path):
  tok_file = str(tmp_path / "tokenizer.json")
  tiny_tokenizer.build(tiny_tokenizer.layout()).save(tok_file)
  out = _run("--task=asr", "--text=x", f"--tokenizer={tok_file}")
  assert out.returncode != 0 and "pass --prompt_ids" in out.stderr
  out = _run("--task=t2i", "--text=x", f"--tokenizer={tmp_path / 'missing.json'}")
  assert out.returncode != 0 and "missing.json" in out.stderr
