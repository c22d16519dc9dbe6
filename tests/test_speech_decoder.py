"""GLM-4-Voice speech decoder: parity with the upstream PyTorch flow model and HiFT vocoder (tiny random
configs, recorded noise; fixtures from tests/fixtures/make_speech_decoder_fixtures.py), batching, the
flow.pt/hift.pt converter and WAV writing."""
import pathlib

import jax
import numpy as np
import pytest
import soundfile
from flax import nnx

from configs import speech_decoder_tiny
from omnidiff_jax.models.speech_out import params as ckpt
from omnidiff_jax.models.speech_out import SAMPLE_RATE, decode, decode_to_wav
from omnidiff_jax.models.speech_out import flow as flowlib
from omnidiff_jax.models.speech_out import hift as hiftlib

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _fixture(name):
  data = np.load(FIXTURES / f"speech_decoder_{name}.npz")
  return data, {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}


@pytest.fixture(scope="module")
def cfg():
  return speech_decoder_tiny.get_config()


@pytest.fixture(scope="module")
def flow(cfg):
  _, state = _fixture("flow")
  model = flowlib.FlowModel(cfg.flow, rngs=nnx.Rngs(0))
  ckpt.load_state(model, state, "flow fixture")
  return model


@pytest.fixture(scope="module")
def hift(cfg):
  _, state = _fixture("hift")
  model = hiftlib.HiFTGenerator(cfg.hift, rngs=nnx.Rngs(0))
  ckpt.load_state(model, state, "hift fixture")
  return model


def test_hift_matches_torch_with_shared_noise(hift):
  fx, state = _fixture("hift")
  assert any(k.endswith("weight_g") for k in state)  # the weight-norm folding is on the tested path
  f0 = np.asarray(hift.f0_predictor(fx["mel"]))
  np.testing.assert_allclose(f0, fx["f0"], rtol=0, atol=3e-4)  # measured 6.1e-5 on f0 up to 124 Hz
  assert 0 < np.mean(f0 > 10) < 1  # voiced and unvoiced frames both exercised
  wav = np.asarray(decode._wav(hift, fx["mel"], fx["phase"], fx["noise"]))
  assert wav.shape == fx["wav"].shape == (2, 6 * 256)
  np.testing.assert_allclose(wav, fx["wav"], rtol=0, atol=2e-5)  # measured 2.1e-6
  assert np.abs(fx["wav"]).max() > 0.05


def test_flow_matches_torch_batched_with_prompt_and_padding(flow, cfg):
  """Both fixture cases (a: 9 tokens, no prompt, zero x-vector; b: 3 prompt tokens + 20 prompt frames, random
  x-vector, 8 tokens) in one padded batch, 10 Euler steps, torch's initial noise: each row equals torch's B=1."""
  fx, _ = _fixture("flow")
  seqs = [np.concatenate([fx[f"{c}/prompt_tokens"][0], fx[f"{c}/tokens"][0]]).astype(np.int32) for c in "ab"]
  token_lens = np.array([len(s) for s in seqs], np.int32)
  frame_lens = flowlib.num_mel_frames(token_lens, cfg.flow)
  assert list(frame_lens) == [62, 75]
  width, frames = 12, int(frame_lens.max()) + 3  # extra padding on both rows
  tokens = np.full((2, width), 7, np.int32)
  noise = np.zeros((2, frames, 80), np.float32)
  cond = np.zeros((2, frames, 80), np.float32)
  for i, c in enumerate("ab"):
    tokens[i, :len(seqs[i])] = seqs[i]
    noise[i, :frame_lens[i]] = fx[f"{c}/noise"][0]
  cond[1, :20] = fx["b/prompt_feat"][0]
  spk = np.concatenate([fx["a/embedding"], fx["b/embedding"]])
  mel = np.asarray(decode._mel(flow, tokens, token_lens, frame_lens, noise, cond, spk, n_timesteps=10))
  np.testing.assert_allclose(mel[0, :62], fx["a/mel"][0], rtol=0, atol=1e-4)  # measured 1.9e-5 (both rows)
  np.testing.assert_allclose(mel[1, 20:75], fx["b/mel"][0], rtol=0, atol=1e-4)
  assert not mel[0, 62:].any() and not mel[1, 75:].any()
  assert np.abs(fx["a/mel"]).max() > 1


def test_weight_norm_folding_matches_torch():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  for layer in (torch.nn.Conv1d(3, 5, 4), torch.nn.ConvTranspose1d(3, 5, 4, stride=2)):
    wn = torch.nn.utils.weight_norm(layer)
    with torch.no_grad():
      wn.weight_g.mul_(torch.rand_like(wn.weight_g) + 0.5)
      wn(torch.zeros(1, 3, 8))  # recompute .weight from g, v
    state = {k: v.detach().numpy() for k, v in wn.state_dict().items()}
    folded = ckpt.fold_weight_norm(state)
    assert set(folded) == {"weight", "bias"}
    # measured relative 1.2e-7 (Conv1d), 1.2e-7 (ConvTranspose1d): torch's norm sums in another order
    np.testing.assert_allclose(folded["weight"], wn.weight.detach().numpy(), rtol=1e-6, atol=0)


def test_converter_lists_every_mismatch(cfg):
  model = flowlib.FlowModel(cfg.flow, rngs=nnx.Rngs(0))
  _, state = _fixture("flow")
  state = dict(state)
  del state["encoder.after_norm.weight"]
  state["decoder.estimator.extra.weight"] = np.zeros(3, np.float32)
  state["encoder_proj.weight"] = np.zeros((80, 31), np.float32)
  with pytest.raises(ValueError) as err:
    ckpt.load_state(model, state, "flow.pt")
  msg = str(err.value)
  assert "flow.pt" in msg and "3 problems" in msg
  assert "missing: encoder.after_norm.weight (32,)" in msg
  assert "unexpected: decoder.estimator.extra.weight (3,)" in msg
  assert "shape: encoder_proj.weight is (80, 31), expected (80, 32)" in msg


def test_convert_then_decode_to_wav(cfg, tmp_path):
  torch = pytest.importorskip("torch")
  for name in ("flow", "hift"):
    _, state = _fixture(name)
    torch.save({k: torch.from_numpy(v.astype(np.float32)) for k, v in state.items()}, tmp_path / f"{name}.pt")
  from tool_cli import run_tool
  run = run_tool("convert_checkpoint", "speech-decoder", tmp_path / "flow.pt", tmp_path / "hift.pt", tmp_path / "ckpt",
                 "--config=configs/speech_decoder_tiny.py")
  assert run.returncode == 0, run.stderr[-3000:]
  decoder = ckpt.load_decoder(cfg, str(tmp_path / "ckpt"), token_bucket=8)
  _, hift_state = _fixture("hift")
  np.testing.assert_array_equal(decoder.hift.conv_post.weight[...],   # measured bit-equal: the same folding
                                ckpt.fold_weight_norm(hift_state)["conv_post.weight"])
  codes = [np.arange(5) * 7 % 64, np.arange(3) + 10]
  paths = [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
  wavs = decode_to_wav(codes, paths, decoder=decoder, seed=1, n_timesteps=2)
  frames = flowlib.num_mel_frames([5, 3], cfg.flow)
  for path, wav, f in zip(paths, wavs, frames):
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == SAMPLE_RATE == 22050 and data.shape == wav.shape == (f * 256,)
    np.testing.assert_allclose(data, wav, atol=1 / 32768 + 1e-6)
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0
  with pytest.raises(ValueError, match=r"codes\[1\].*\[0, 64\)"):
    decoder.mel([np.arange(3), np.array([70])], key=jax.random.key(0))


def test_cli_rejects_bad_codes_with_clear_errors(tmp_path):
  from tool_cli import run_tool
  (tmp_path / "codes.txt").write_text("1 2 3")
  (tmp_path / "nested.json").write_text("[[1, 2], [[3]]]")
  for name, expected in (("codes.txt", "codes.txt: expected a .npy or .json file"),
                         ("nested.json", "nested.json: row 1 must be a 1-D list of integer codes")):
    proc = run_tool("speech_decode", f"--codes={tmp_path / name}", f"--out={tmp_path / 'x.wav'}", timeout=300)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-2000:]
