"""tools/convert_checkpoint.py speech-in + tools/speech_tokenize.py end to end on the tiny fixtures: convert,
tokenize / encode, skip bad files."""
import json
import pathlib

import numpy as np
import soundfile
import torch
from safetensors.numpy import save_file

from configs import sensevoice_tiny, whisper_vq_tiny
from omnidiff_jax.models.speech_in import params as speech_in
from omnidiff_jax.models.speech_in import frontend as audio_frontend, sensevoice, whisper_vq
from tool_cli import run_tool

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
ROOT = FIXTURES.parent.parent


def _sd(name):
  return {k[3:]: v for k, v in np.load(FIXTURES / name).items() if k.startswith("sd/")}


def _ok(run):
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def test_convert_and_tokenize_whisper_vq(tmp_path):
  save_file(_sd("speech_in_whisper_vq.npz"), str(tmp_path / "model.safetensors"))   # 'model.encoder.' keys
  params = str(tmp_path / "vq.safetensors")
  cfg = str(ROOT / "configs" / "whisper_vq_tiny.py")
  _ok(run_tool("convert_checkpoint", "speech-in", tmp_path, params, "--kind=whisper_vq", f"--config={cfg}"))
  wave = np.load(FIXTURES / "speech_in_frontends.npz")["wave_a"]
  soundfile.write(tmp_path / "mono.wav", wave, 16000, subtype="FLOAT")
  soundfile.write(tmp_path / "stereo.wav", np.stack([wave, -wave], 1), 16000, subtype="FLOAT")  # channel 0 used
  (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
  soundfile.write(tmp_path / "silent.wav", np.zeros(0, np.float32), 16000)
  run = _ok(run_tool("speech_tokenize", "whisper_vq", f"--config={cfg}", f"--params={params}",
                     *(tmp_path / n for n in ("mono.wav", "stereo.wav", "broken.wav", "silent.wav"))))
  assert "2 file(s) done, 2 skipped" in run.stdout
  mono = json.loads((tmp_path / "mono_glm4voice.json").read_text())
  assert mono == json.loads((tmp_path / "stereo_glm4voice.json").read_text())

  model = speech_in.abstract(whisper_vq.WhisperVQEncoder, whisper_vq_tiny.get_config().encoder)
  speech_in.load_params(model, params)
  want = whisper_vq.tokenize(model, audio_frontend.WhisperFrontend(n_mels=16), [wave], 16000)[0]
  assert mono == want and len(mono) == int(np.ceil(wave.size / 1280))

  run = run_tool("speech_tokenize", "whisper_vq", f"--config={cfg}", f"--params={params}", "--on_error=error",
                 tmp_path / "broken.wav")
  assert run.returncode == 1 and "broken.wav" in run.stderr


def test_convert_sensevoice_from_model_pt(tmp_path):
  prefix = "model.audio_model.model."
  sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in _sd("speech_in_sensevoice.npz").items()
        if k.startswith(prefix)}
  torch.save(sd, tmp_path / "model.pt")
  cfg = str(ROOT / "configs" / "sensevoice_tiny.py")
  _ok(run_tool("convert_checkpoint", "speech-in", tmp_path / "model.pt", tmp_path / "sv.safetensors",
               "--kind=sensevoice", f"--config={cfg}"))
  wave = np.load(FIXTURES / "speech_in_frontends.npz")["wave_b"]
  soundfile.write(tmp_path / "clip.wav", np.stack([wave, wave], 1), 16000, subtype="FLOAT")   # channels averaged
  _ok(run_tool("speech_tokenize", "sensevoice", f"--config={cfg}", f"--params={tmp_path / 'sv.safetensors'}",
               f"--output_dir={tmp_path}", tmp_path / "clip.wav"))
  feats = np.load(tmp_path / "clip_sensevoice.npy")
  tiny_cfg = sensevoice_tiny.get_config()
  frontend = audio_frontend.SenseVoiceFrontend(fbank=audio_frontend.FbankOptions(num_mel_bins=8), lfr_m=3, lfr_n=2)
  encoder = speech_in.abstract(sensevoice.SenseVoiceEncoder, tiny_cfg.encoder)
  speech_in.load_params(encoder, str(tmp_path / "sv.safetensors"))
  want = sensevoice.encode_features(encoder, [frontend(wave, 16000)])[0]
  assert feats.shape == want.shape == (-(-((wave.size - 400) // 160 + 1) // 2) + 4, 32)
  np.testing.assert_allclose(feats, want, rtol=0, atol=1e-5)  # measured 3.5e-6 (CLI batch vs direct call)
  del sd["encoder.tp_norm.weight"]
  torch.save(sd, tmp_path / "bad.pt")
  run = run_tool("convert_checkpoint", "speech-in", tmp_path / "bad.pt", tmp_path / "bad.safetensors",
                 "--kind=sensevoice", f"--config={cfg}")
  assert run.returncode == 1 and "missing encoder.tp_norm.weight" in run.stderr
