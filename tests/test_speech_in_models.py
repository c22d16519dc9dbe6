"""SenseVoice encoder, projector, splice into the backbone, WhisperVQ codes, and the converters, against the
upstream PyTorch outputs in tests/fixtures/speech_in_{sensevoice,whisper_vq}.npz (tiny random configs)."""
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import sensevoice_tiny, tiny, whisper_vq_tiny
from omnidiff_jax.models.speech_in import params as speech_in
from omnidiff_jax.models.speech_in import adapter as audio_adapter, sensevoice, whisper_vq
from omnidiff_jax import sharding
from omnidiff_jax.config import padded_vocab_size

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _load(name):
  data = dict(np.load(FIXTURES / name))
  return data, {k[3:]: v for k, v in data.items() if k.startswith("sd/")}


@pytest.fixture(scope="module")
def sv():
  data, sd = _load("speech_in_sensevoice.npz")
  cfg = sensevoice_tiny.get_config()
  encoder = speech_in.abstract(sensevoice.SenseVoiceEncoder, cfg.encoder)
  speech_in.load_sensevoice(encoder, sd)
  projector_cfg = cfg.projector.copy_and_resolve_references()
  projector_cfg.hidden_size = data["projected"].shape[-1]
  projector = speech_in.abstract(audio_adapter.AudioProjector, projector_cfg)
  speech_in.load_projector(projector, sd)
  return data, sd, encoder, projector


def test_sensevoice_encoder_parity(sv):
  data, _, encoder, _ = sv
  out, lengths = nnx.jit(lambda m, f, l: m(f, l))(encoder, data["feats"], data["lengths"])
  np.testing.assert_array_equal(lengths, data["encoder_lengths"])
  for b, n in enumerate(data["encoder_lengths"]):   # valid rows (padded rows are never spliced)
    np.testing.assert_allclose(out[b, :n], data["encoder_out"][b, :n], atol=1e-5, rtol=0)  # measured 1.1e-6


def test_sensevoice_bfloat16_runs_close(sv):
  """Upstream runs the frozen encoder in bf16; our bf16 path stays within bf16 rounding of the fp32 result.

  Relative L2 error against upstream's fp32 output, measured: ours in bf16 8.0e-3; upstream's own module run in
  bf16 (torch, the fixture's weights) 9.9e-3. The bound is twice the reference's own fp32-vs-bf16 spread."""
  data, sd, _, _ = sv
  cfg = sensevoice_tiny.get_config().encoder
  cfg.dtype = "bfloat16"
  encoder = speech_in.abstract(sensevoice.SenseVoiceEncoder, cfg)
  speech_in.load_sensevoice(encoder, sd)
  out, _ = nnx.jit(lambda m, f, l: m(f, l))(encoder, data["feats"], data["lengths"])
  assert out.dtype == jnp.bfloat16
  got, want = np.asarray(out[0, :13], np.float32), data["encoder_out"][0, :13]
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02


def test_projector_parity(sv):
  data, _, _, projector = sv
  # measured 7.5e-9 on outputs up to 0.03 (a tanh-approximate GELU would be far off)
  np.testing.assert_allclose(projector(jnp.asarray(data["encoder_out"])), data["projected"], atol=7e-8, rtol=0)


def test_splice_into_backbone_embeddings(sv):
  """Projected SenseVoice features (upstream's encoder output) go into the audio slots; the backbone runs."""
  data = sv[0]
  cfg = sensevoice_tiny.get_config()
  backbone_cfg = tiny.get_config().model
  assert cfg.projector.hidden_size == backbone_cfg.hidden_size
  projector = audio_adapter.AudioProjector(cfg.projector, rngs=nnx.Rngs(1))
  model = sharding.create_model(backbone_cfg, seed=2)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, 200, (2, 40)), jnp.int32)
  lengths = data["encoder_lengths"]                                  # [13, 10]: clip b goes into row b
  slots = np.zeros((2, 40), bool)
  slots[0, 5:5 + lengths[0]], slots[1, 20:20 + lengths[1]] = True, True

  @nnx.jit
  def run(projector, model, encoder_out, ids, slots):
    projected = projector(encoder_out)                               # (2 rows, 13, 128)
    embeds = model.embed(ids)
    spliced = audio_adapter.splice_features(embeds, projected, slots)
    return projected, embeds, spliced, model(inputs_embeds=spliced), model(inputs_embeds=embeds)

  projected, embeds, spliced, logits, plain_logits = run(projector, model, data["encoder_out"], ids, slots)
  np.testing.assert_array_equal(spliced[0, 5:18], projected[0, :13])
  np.testing.assert_array_equal(spliced[1, 20:30], projected[1, :10])
  np.testing.assert_array_equal(np.asarray(spliced)[~slots], np.asarray(embeds)[~slots])
  assert logits.shape == (2, 40, padded_vocab_size(backbone_cfg)) and bool(jnp.isfinite(logits).all())
  assert not np.allclose(logits, plain_logits)


@pytest.fixture(scope="module")
def vq():
  data, sd = _load("speech_in_whisper_vq.npz")
  model = speech_in.abstract(whisper_vq.WhisperVQEncoder, whisper_vq_tiny.get_config().encoder)
  speech_in.load_whisper_vq(model, sd)
  return data, sd, model


def test_whisper_vq_parity(vq):
  data, _, model = vq
  (hidden, _), (codes, mask) = nnx.jit(lambda m, x, k: (m.encode(x, k), m(x, k)))(
      model, data["mels"], data["mel_mask"])
  # The quantizer's continuous input (after the pooled-rate layer) matches upstream's.
  np.testing.assert_allclose(hidden, data["vq_input"], atol=6e-7, rtol=0)  # measured 2.4e-7 (values up to 1.1)
  np.testing.assert_array_equal(mask, data["code_mask"])
  assert codes.shape == data["codes"].shape
  # Codes whose best and second-best squared distances differ by far more than fp32 rounding (~1e-8 here).
  decided = data["margins"] > 1e-6
  assert decided.mean() > 0.9
  np.testing.assert_array_equal(np.asarray(codes)[decided], data["codes"][decided])


def test_converters_report_every_mismatch(sv, vq):
  _, sd, encoder, _ = sv
  prefix = "model.audio_model.model."
  broken = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}   # bare model.pt layout
  del broken["encoder.tp_norm.bias"]
  broken["encoder.encoders.1.feed_forward.w_1.weight"] = np.zeros((3, 3), np.float32)
  broken["encoder.surprise.weight"] = np.zeros(2, np.float32)
  broken["ctc.ctc_lo.weight"] = np.zeros((4, 32), np.float32)    # ignored: CTC head
  with pytest.raises(speech_in.CheckpointMismatchError) as e:
    speech_in.load_sensevoice(encoder, broken)
  msg = str(e.value)
  assert "3 problem(s)" in msg and "encoder.tp_norm.bias" in msg and "encoder.surprise.weight" in msg
  assert "encoder.encoders.1.feed_forward.w_1.weight: shape (3, 3)" in msg and "ctc" not in msg

  _, vsd, model = vq
  broken = {k.replace("model.encoder.", "", 1): v for k, v in vsd.items()}   # bare layout is accepted too
  speech_in.load_whisper_vq(model, broken)
  del broken["codebook.weight"]
  with pytest.raises(speech_in.CheckpointMismatchError, match="codebook.weight"):
    speech_in.load_whisper_vq(model, broken)


def test_params_roundtrip(tmp_path, vq):
  _, _, model = vq
  path = str(tmp_path / "vq.safetensors")
  speech_in.save_params(model, path)
  fresh = speech_in.abstract(whisper_vq.WhisperVQEncoder, whisper_vq_tiny.get_config().encoder)
  speech_in.load_params(fresh, path)
  want, got = nnx.to_flat_state(nnx.state(model)), dict(nnx.to_flat_state(nnx.state(fresh)))
  assert len(want) == len(got)
  for key, var in want:
    np.testing.assert_array_equal(got[key].get_value(), var.get_value())
  other_cfg = whisper_vq_tiny.get_config().encoder
  other_cfg.d_model = 32
  with pytest.raises(speech_in.CheckpointMismatchError, match="in our layout, expected"):
    speech_in.load_params(speech_in.abstract(whisper_vq.WhisperVQEncoder, other_cfg), path)


def test_tokenize_segments_and_batches(vq):
  """Long audio is cut into segments, run in batches and the codes concatenated in order."""
  from omnidiff_jax.models.speech_in import frontend as audio_frontend
  _, _, model = vq
  wave = np.load(FIXTURES / "speech_in_frontends.npz")["wave_a"]               # 1.37 s
  frontend = audio_frontend.WhisperFrontend(n_mels=16)
  whole = whisper_vq.tokenize(model, frontend, [wave, wave[:8000]], 16000, segment_seconds=0.5, batch_size=2)
  pieces = [whisper_vq.tokenize(model, frontend, [wave[s:s + 8000]], 16000)[0] for s in (0, 8000, 16000)]
  assert whole[0] == pieces[0] + pieces[1] + pieces[2]
  assert whole[1] == pieces[0] and len(whole[0]) == 7 + 7 + 5


def test_convert_checkpoint_cli_speech_in_subcommand(tmp_path, vq):
  from safetensors.numpy import save_file
  from tool_cli import run_tool
  _, vsd, model = vq
  src, dst = str(tmp_path / "glm.safetensors"), str(tmp_path / "ours.safetensors")
  save_file({k: np.ascontiguousarray(v) for k, v in vsd.items()}, src)
  args = ["speech-in", src, dst, "--kind=whisper_vq", "--config=configs/whisper_vq_tiny.py"]
  run = run_tool("convert_checkpoint", *args)
  assert run.returncode == 0, run.stderr[-3000:]
  fresh = speech_in.abstract(whisper_vq.WhisperVQEncoder, whisper_vq_tiny.get_config().encoder)
  speech_in.load_params(fresh, dst)
  got = dict(nnx.to_flat_state(nnx.state(fresh)))
  for key, var in nnx.to_flat_state(nnx.state(model)):
    np.testing.assert_array_equal(got[key].get_value(), var.get_value())
  save_file({k: np.ascontiguousarray(v) for k, v in vsd.items() if "codebook" not in k}, src)
  run = run_tool("convert_checkpoint", *args)
  assert run.returncode == 1 and "codebook.weight" in run.stderr
