"""Audio front ends vs the upstream references (fixtures from tests/fixtures/make_speech_in_fixtures.py),
resampling, and the bad-waveform errors."""
import pathlib

import numpy as np
import pytest

from omnidiff_jax.models.speech_in import frontend as af

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURES / "speech_in_frontends.npz"))


@pytest.mark.parametrize("name", ["wave_a", "wave_b"])
def test_sensevoice_frontend_matches_funasr(ref, name):
  frontend = af.SenseVoiceFrontend(cmvn=af.load_cmvn(str(FIXTURES / "speech_in_am.mvn")))
  ours = frontend(ref[name], 16000)
  want = ref[f"sensevoice_{name}"]
  assert ours.shape == want.shape == (-(-((ref[name].size - 400) // 160 + 1) // 6), 560)
  # Both sides run the fbank in float32. (On signals with near-empty mel bins the reference's own float32
  # rounding reaches ~3e-4 against a float64 evaluation; this fixture's broadband noise avoids that.)
  np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)  # measured 4.1e-5


@pytest.mark.parametrize("n_mels,atol", [(128, 1e-4), (16, 2e-6)])  # measured 1.7e-5 and 2.4e-7
def test_whisper_log_mel_matches_transformers(ref, n_mels, atol):
  feats, mask = af.WhisperFrontend(n_mels=n_mels)([ref["wave_a"], ref["wave_b"]])
  np.testing.assert_array_equal(mask, ref[f"whisper{n_mels}_mask"])
  np.testing.assert_allclose(feats, ref[f"whisper{n_mels}_features"], atol=atol, rtol=0)
  assert feats.shape[1] % 8 == 0   # padded to a multiple of 1280 samples = 8 frames


def test_lfr_layout():
  feats = np.arange(13, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)   # frame t has value t
  out = af.apply_lfr(feats, 7, 6)
  assert out.shape == (3, 14)
  np.testing.assert_array_equal(out[0, ::2], [0, 0, 0, 0, 1, 2, 3])      # 3 copies of frame 0 in front
  np.testing.assert_array_equal(out[1, ::2], [3, 4, 5, 6, 7, 8, 9])
  np.testing.assert_array_equal(out[2, ::2], [9, 10, 11, 12, 12, 12, 12])  # tail repeats the last frame


def test_load_cmvn_errors(tmp_path):
  bad = tmp_path / "am.mvn"
  bad.write_text("<Nnet>\n<AddShift> 2 2\n<LearnRateCoef> 0 [ 1 2 ]\n</Nnet>\n")
  with pytest.raises(ValueError, match="Rescale"):
    af.load_cmvn(str(bad))


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resample_sinusoid(orig):
  t = np.arange(int(0.5 * orig)) / orig
  wave = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
  out = af.resample(wave, orig, 16000)
  assert out.shape == (int(np.ceil(wave.size * 16000 / orig)),)
  t16 = np.arange(out.size) / 16000
  interior = slice(200, out.size - 200)   # away from the zero-padded edges
  np.testing.assert_allclose(out[interior], np.sin(2 * np.pi * 440.0 * t16)[interior], atol=2e-3)


def test_resample_removes_content_above_new_nyquist():
  t = np.arange(44100) / 44100
  wave = np.sin(2 * np.pi * 12000.0 * t).astype(np.float32)   # above 8 kHz
  assert np.abs(af.resample(wave, 44100, 16000)[500:-500]).max() < 2e-2


def test_resampled_input_feeds_frontend(ref):
  """44.1 kHz input is resampled first: features match those of the same signal made at 16 kHz."""
  t = np.arange(int(0.8 * 44100)) / 44100
  wave = (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 2000.0 * t)).astype(np.float32)
  t16 = np.arange(int(0.8 * 16000)) / 16000
  wave16 = (0.3 * np.sin(2 * np.pi * 440.0 * t16) + 0.2 * np.sin(2 * np.pi * 2000.0 * t16)).astype(np.float32)
  frontend = af.SenseVoiceFrontend()
  a, b = frontend(wave, 44100), frontend(wave16, 16000)
  assert a.shape == b.shape
  np.testing.assert_allclose(a[2:-2], b[2:-2], atol=0.05)   # interior frames; log-mel domain


@pytest.mark.parametrize("wave, rate, match", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.array([0.1, np.nan] * 400, np.float32), 16000, "NaN/Inf"),
    (np.array([0.1, np.inf] * 400, np.float32), 16000, "NaN/Inf"),
    (np.zeros((2, 1600), np.float32), 16000, "stereo"),
    (np.zeros((1, 2, 1600), np.float32), 16000, "3-D"),
    (np.zeros(16000 * 3, np.float32), 16000, "too long"),
    (np.zeros(1600, np.float32), 0, "sample rate"),
    (np.zeros(100, np.float32), 16000, "too short"),
    (np.array(["a"] * 800), 16000, "dtype"),
    (np.zeros(1600, np.int16), 16000, "dtype"),
])
def test_bad_audio_errors(wave, rate, match):
  frontend = af.SenseVoiceFrontend(max_seconds=2.0)
  with pytest.raises(af.BadAudioError, match=match):
    frontend(wave, rate)
  if match not in ("too short",):
    with pytest.raises(af.BadAudioError, match=match):
      af.WhisperFrontend()([wave], rate, max_seconds=2.0)


def test_bad_audio_is_a_value_error():
  assert issubclass(af.BadAudioError, ValueError)


def test_dither_needs_rng_and_changes_features(ref):
  frontend = af.SenseVoiceFrontend(fbank=af.FbankOptions(dither=1.0))
  with pytest.raises(ValueError, match="rng"):
    frontend(ref["wave_b"], 16000)
  a = frontend(ref["wave_b"], 16000, rng=np.random.default_rng(0))
  b = af.SenseVoiceFrontend()(ref["wave_b"], 16000)
  assert a.shape == b.shape and 0 < np.abs(a - b).max() < 0.5
