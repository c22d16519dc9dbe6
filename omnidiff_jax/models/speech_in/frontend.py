"""Audio front ends in NumPy: waveform checks, resampling, SenseVoice fbank (+LFR, CMVN), Whisper log-mel.

Input everywhere is a mono float waveform array in [-1, 1] plus its sample rate. Reading files (soundfile,
stereo mix-down, corrupt files) belongs to the data pipeline; here arrays are validated and a bad one raises
`BadAudioError` (a ValueError) naming what is wrong, so the pipeline can count it as a skip.

SenseVoice (FunASR `WavFrontend` as configured for SenseVoiceSmall):
  16 kHz, x 32768, Kaldi fbank (80 mels, 25 ms / 10 ms frames, hamming, snip_edges, DC removal,
  preemphasis 0.97, 512-point FFT, power spectrum, mel bins from 20 Hz to Nyquist, log floored at float32 eps,
  energy_floor 0) -> LFR (m=7, n=6: 3 copies of frame 0 in front, row i = frames[6i:6i+7] flattened, the tail
  padded with the last frame) -> CMVN (x + shift) * scale from am.mvn. Output (ceil(T/6), 560) at 60 ms.
  Upstream's WavFrontend dithers by default (dither 1.0, Gaussian noise); `dither` here defaults to 0
  (deterministic); pass dither=1.0 and a numpy Generator to reproduce upstream's training-time noise.

Whisper (transformers `WhisperFeatureExtractor`, torch path, as GLM-4-Voice calls it): zero-pad every clip to
the longest (rounded up to `pad_to_multiple_of` samples), centred STFT (reflect pad n_fft/2, periodic Hann,
n_fft 400, hop 160), power, drop the last frame, Slaney mel filters (0-8 kHz), log10(max(., 1e-10)),
max(x, max_per_clip - 8), (x + 4) / 4. The frame mask is the sample mask taken every hop.

Resampling: torchaudio's default `Resample` (the method upstream uses): windowed sinc with a Hann window,
lowpass_filter_width 6, rolloff 0.99, rates reduced by their gcd, output length ceil(n * new / orig). The
kernel is built and applied in float64.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

SENSEVOICE_SAMPLE_RATE = 16000
WHISPER_SAMPLE_RATE = 16000
_F32_EPS = float(np.finfo(np.float32).eps)


class BadAudioError(ValueError):
  """A waveform that cannot be used (empty, non-finite, too long/short, not mono, bad sample rate)."""


def validate_waveform(wave, sample_rate: int, *, max_seconds: float | None = None,
                      min_samples: int = 1) -> np.ndarray:
  """Checks a waveform array and returns it as contiguous float32 of shape (num_samples,).

  Raises BadAudioError naming the problem: not 1-D (stereo/multi-channel must be mixed down by the caller),
  empty or shorter than `min_samples`, NaN/Inf samples, longer than `max_seconds`, or a bad sample rate.
  """
  wave = np.asarray(wave)
  if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
    raise BadAudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
  if wave.ndim != 1:
    what = "stereo/multi-channel" if wave.ndim == 2 else f"{wave.ndim}-D"
    raise BadAudioError(f"expected a mono waveform of shape (num_samples,), got {what} shape {wave.shape}")
  if not np.issubdtype(wave.dtype, np.floating):
    raise BadAudioError(f"expected a float waveform in [-1, 1], got dtype {wave.dtype} (convert PCM first)")
  if wave.size == 0:
    raise BadAudioError("empty waveform (0 samples)")
  if wave.size < min_samples:
    raise BadAudioError(f"waveform too short: {wave.size} samples, need at least {min_samples}")
  wave = np.ascontiguousarray(wave, dtype=np.float32)
  bad = ~np.isfinite(wave)
  if bad.any():
    raise BadAudioError(f"waveform has {int(bad.sum())} NaN/Inf samples (first at index {int(np.argmax(bad))})")
  if max_seconds is not None and wave.size > max_seconds * sample_rate:
    raise BadAudioError(f"waveform too long: {wave.size / sample_rate:.2f} s > max {max_seconds} s")
  return wave


def _sinc_resample_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
  """torchaudio's sinc_interp_hann kernel for rates already divided by their gcd: (new, 2*width + orig)."""
  base = min(orig, new) * rolloff
  width = math.ceil(width_zeros * orig / base)
  idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
  t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
  t = np.clip(t, -width_zeros, width_zeros)
  window = np.cos(t * math.pi / width_zeros / 2) ** 2
  t = t * math.pi
  safe_t = np.where(t == 0, 1.0, t)
  kernel = np.where(t == 0, 1.0, np.sin(safe_t) / safe_t) * window * (base / orig)
  return kernel, width


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
  """Resamples a 1-D waveform (float32 out) with torchaudio's default windowed-sinc method (see module doc)."""
  if orig_rate == new_rate:
    return np.asarray(wave, np.float32)
  g = math.gcd(int(orig_rate), int(new_rate))
  orig, new = orig_rate // g, new_rate // g
  kernel, width = _sinc_resample_kernel(orig, new)
  n = wave.shape[-1]
  padded = np.pad(np.asarray(wave, np.float64), (width, width + orig))
  windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]  # (K, 2w + orig)
  out = (windows @ kernel.T).reshape(-1)                                            # (K * new,)
  return out[:math.ceil(new * n / orig)].astype(np.float32)


def to_rate(wave: np.ndarray, sample_rate: int, target_rate: int, **validate_kw) -> np.ndarray:
  """Validates a waveform and resamples it to `target_rate`. Returns float32 (num_samples',)."""
  return resample(validate_waveform(wave, sample_rate, **validate_kw), sample_rate, target_rate)


# ----------------------------------------------------------------------------------------------------------
# Kaldi fbank + LFR + CMVN (SenseVoice)

def _kaldi_window(kind: str, size: int) -> np.ndarray:
  n = np.arange(size, dtype=np.float64)
  if kind == "hamming":
    return 0.54 - 0.46 * np.cos(2 * math.pi * n / (size - 1))
  hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (size - 1))
  if kind == "hanning":
    return hann
  if kind == "povey":
    return hann ** 0.85
  raise ValueError(f"unsupported window {kind!r}; use 'hamming', 'hanning' or 'povey'")


def kaldi_mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
  """Kaldi's triangular mel filters on the 1127*ln(1 + f/700) scale: (fft_size // 2 + 1, num_bins).

  The Nyquist row is zero, as in Kaldi / torchaudio.
  """
  nyquist = 0.5 * sample_rate
  high_freq = high_freq + nyquist if high_freq <= 0 else high_freq
  mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)
  lo, hi = mel(low_freq), mel(high_freq)
  delta = (hi - lo) / (num_bins + 1)
  b = np.arange(num_bins, dtype=np.float64)[:, None]
  left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
  bin_mel = mel(sample_rate / fft_size * np.arange(fft_size // 2))[None, :]
  banks = np.maximum(0.0, np.minimum((bin_mel - left) / (center - left), (right - bin_mel) / (right - center)))
  return np.concatenate([banks, np.zeros((num_bins, 1))], axis=1).T


@dataclasses.dataclass(frozen=True)
class FbankOptions:
  sample_rate: int = 16000
  num_mel_bins: int = 80
  frame_length_ms: float = 25.0
  frame_shift_ms: float = 10.0
  window: str = "hamming"
  preemphasis: float = 0.97
  low_freq: float = 20.0
  high_freq: float = 0.0
  dither: float = 0.0

  @property
  def window_size(self) -> int:
    return int(self.sample_rate * self.frame_length_ms / 1000)

  @property
  def window_shift(self) -> int:
    return int(self.sample_rate * self.frame_shift_ms / 1000)

  @property
  def fft_size(self) -> int:
    return 1 << (self.window_size - 1).bit_length()


def kaldi_fbank(wave: np.ndarray, opts: FbankOptions = FbankOptions(),
                rng: np.random.Generator | None = None) -> np.ndarray:
  """Kaldi log-mel filterbank (torchaudio.compliance.kaldi.fbank, snip_edges=True, energy_floor 0).

  wave: (num_samples,) float, already scaled (WavFrontend multiplies by 32768). Returns (T, num_mel_bins)
  float32 with T = 1 + (num_samples - window) // shift.
  """
  size, shift = opts.window_size, opts.window_shift
  if wave.shape[0] < size:
    raise BadAudioError(f"waveform too short for one {opts.frame_length_ms} ms frame: {wave.shape[0]} samples")
  frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float32), size)[::shift]  # (T, size)
  if opts.dither:
    if rng is None:
      raise ValueError("dither > 0 needs an explicit numpy Generator `rng`")
    frames = frames + opts.dither * rng.standard_normal(frames.shape, dtype=np.float32)
  frames = frames - frames.mean(axis=1, keepdims=True)
  if opts.preemphasis:
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - np.float32(opts.preemphasis) * prev
  frames = frames * _kaldi_window(opts.window, size).astype(np.float32)
  power = np.abs(np.fft.rfft(frames, n=opts.fft_size, axis=1)) ** 2                        # (T, fft/2 + 1)
  banks = kaldi_mel_banks(opts.num_mel_bins, opts.fft_size, opts.sample_rate, opts.low_freq, opts.high_freq)
  mel = power.astype(np.float32) @ banks.astype(np.float32)
  return np.log(np.maximum(mel, _F32_EPS)).astype(np.float32)


def apply_lfr(feats: np.ndarray, lfr_m: int = 7, lfr_n: int = 6) -> np.ndarray:
  """Low frame rate stacking (FunASR apply_lfr). feats: (T, D) -> (ceil(T / lfr_n), lfr_m * D).

  (lfr_m - 1) // 2 copies of frame 0 go in front; windows running past the end repeat the last frame.
  """
  t = feats.shape[0]
  t_lfr = -(-t // lfr_n)
  left = (lfr_m - 1) // 2
  rows = np.arange(t_lfr)[:, None] * lfr_n + np.arange(lfr_m)[None, :] - left    # index into the unpadded frames
  return feats[np.clip(rows, 0, t - 1)].reshape(t_lfr, lfr_m * feats.shape[1])


def load_cmvn(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses a Kaldi nnet am.mvn (<AddShift> and <Rescale> vectors). Returns (shift, scale), each (D,) float32."""
  with open(path, encoding="utf-8") as f:
    lines = [line.split() for line in f]
  vectors = {}
  for i, items in enumerate(lines[:-1]):
    if items and items[0] in ("<AddShift>", "<Rescale>") and lines[i + 1][:1] == ["<LearnRateCoef>"]:
      vectors[items[0]] = np.asarray(lines[i + 1][3:-1], np.float32)
  missing = {"<AddShift>", "<Rescale>"} - set(vectors)
  if missing:
    raise ValueError(f"{path}: no {' / '.join(sorted(missing))} vector found (expected a Kaldi nnet am.mvn)")
  if vectors["<AddShift>"].shape != vectors["<Rescale>"].shape:
    raise ValueError(f"{path}: <AddShift> has {vectors['<AddShift>'].size} values, <Rescale> "
                     f"{vectors['<Rescale>'].size}")
  return vectors["<AddShift>"], vectors["<Rescale>"]


@dataclasses.dataclass(frozen=True)
class SenseVoiceFrontend:
  """FunASR WavFrontend for SenseVoiceSmall. Call with (wave, sample_rate) -> (T_lfr, n_mels * lfr_m) float32.

  cmvn: (shift, scale) from `load_cmvn(am.mvn)`, or None to skip CMVN.
  """
  cmvn: tuple[np.ndarray, np.ndarray] | None = None
  fbank: FbankOptions = FbankOptions()
  lfr_m: int = 7
  lfr_n: int = 6
  max_seconds: float | None = None

  @classmethod
  def from_config(cls, cfg, cmvn_file: str = "") -> "SenseVoiceFrontend":
    """From a `frontend` config section (configs/sensevoice.py frontend_config); cmvn_file overrides
    cfg.cmvn_file ('' in both: no CMVN)."""
    cmvn_file = cmvn_file or cfg.cmvn_file
    return cls(cmvn=load_cmvn(cmvn_file) if cmvn_file else None,
               fbank=FbankOptions(sample_rate=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins,
                                  frame_length_ms=cfg.frame_length_ms, frame_shift_ms=cfg.frame_shift_ms,
                                  window=cfg.window, dither=cfg.dither),
               lfr_m=cfg.lfr_m, lfr_n=cfg.lfr_n, max_seconds=cfg.max_seconds or None)

  @property
  def feature_dim(self) -> int:
    return self.fbank.num_mel_bins * self.lfr_m

  def __call__(self, wave, sample_rate: int, rng: np.random.Generator | None = None) -> np.ndarray:
    wave = to_rate(wave, sample_rate, self.fbank.sample_rate, max_seconds=self.max_seconds)
    if wave.shape[0] < self.fbank.window_size:
      raise BadAudioError(f"waveform too short: {wave.shape[0]} samples at {self.fbank.sample_rate} Hz, "
                          f"need at least one {self.fbank.frame_length_ms} ms frame ({self.fbank.window_size})")
    feats = apply_lfr(kaldi_fbank(wave * 32768.0, self.fbank, rng), self.lfr_m, self.lfr_n)
    if self.cmvn is not None:
      shift, scale = self.cmvn
      if shift.shape[0] != feats.shape[1]:
        raise ValueError(f"CMVN has {shift.shape[0]} dims, features have {feats.shape[1]}")
      feats = (feats + shift) * scale
    return feats.astype(np.float32)


def pad_features(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads a list of (T_i, D) arrays with zeros. Returns (B, max T, D) float32 and lengths (B,) int32."""
  lengths = np.asarray([f.shape[0] for f in features], np.int32)
  out = np.zeros((len(features), int(lengths.max()), features[0].shape[1]), np.float32)
  for i, f in enumerate(features):
    out[i, :f.shape[0]] = f
  return out, lengths


# ----------------------------------------------------------------------------------------------------------
# Whisper log-mel (GLM-4-Voice tokenizer)

def _hz_to_mel_slaney(f):
  f = np.asarray(f, np.float64)
  logstep = 27.0 / np.log(6.4)
  return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * logstep, 3.0 * f / 200.0)


def _mel_to_hz_slaney(m):
  m = np.asarray(m, np.float64)
  logstep = np.log(6.4) / 27.0
  return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), 200.0 * m / 3.0)


def slaney_mel_filters(num_freq_bins: int, num_mels: int, sample_rate: int, f_min: float = 0.0,
                       f_max: float = 8000.0) -> np.ndarray:
  """Slaney-scale, Slaney-normalised triangular filters (librosa / transformers): (num_freq_bins, num_mels)."""
  hz = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), num_mels + 2))
  fft_freqs = np.linspace(0, sample_rate // 2, num_freq_bins)
  slopes = hz[None, :] - fft_freqs[:, None]
  diff = np.diff(hz)
  down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
  filters = np.maximum(0.0, np.minimum(down, up))
  return filters * (2.0 / (hz[2:num_mels + 2] - hz[:num_mels]))[None, :]


@dataclasses.dataclass(frozen=True)
class WhisperFrontend:
  """Whisper log-mel features for a batch of clips, as GLM-4-Voice's `extract_speech_token` computes them.

  Call with a list of mono waveforms (all at `sample_rate`) -> (features (B, T, n_mels) float32,
  frame mask (B, T) int32), T = padded samples / hop, padded samples a multiple of `pad_to_multiple_of`.
  """
  n_mels: int = 128
  n_fft: int = 400
  hop_length: int = 160
  sample_rate: int = WHISPER_SAMPLE_RATE
  pad_to_multiple_of: int = 1280   # conv stride 2 x pooling 4 x hop 160: one token

  def mel_filters(self) -> np.ndarray:
    return slaney_mel_filters(1 + self.n_fft // 2, self.n_mels, self.sample_rate).astype(np.float32)

  def log_mel(self, padded: np.ndarray) -> np.ndarray:
    """padded: (B, N) float32 -> (B, N // hop, n_mels) float32."""
    half = self.n_fft // 2
    x = np.pad(padded, ((0, 0), (half, half)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=1)[:, ::self.hop_length]
    window = (0.5 - 0.5 * np.cos(2 * math.pi * np.arange(self.n_fft) / self.n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2                            # (B, T + 1, F)
    mel = power[:, :-1].astype(np.float32) @ self.mel_filters()
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)

  def __call__(self, waves: list, sample_rate: int | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not len(waves):
      raise ValueError("no waveforms given")
    rate = self.sample_rate if sample_rate is None else sample_rate
    waves = [to_rate(w, rate, self.sample_rate, max_seconds=max_seconds) for w in waves]
    longest = max(w.shape[0] for w in waves)
    total = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
    padded = np.zeros((len(waves), total), np.float32)
    sample_mask = np.zeros((len(waves), total), np.int32)
    for i, w in enumerate(waves):
      padded[i, :w.shape[0]] = w
      sample_mask[i, :w.shape[0]] = 1
    return self.log_mel(padded), sample_mask[:, ::self.hop_length]
