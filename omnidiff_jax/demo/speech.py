"""Speech for the demo corpus: espeak-ng when installed, else a small deterministic formant synthesiser.

Both return 16 kHz mono float32 waves in [-1, 1] for (text, Voice), the same samples for the same inputs.

  espeak     espeak-ng (Debian package `espeak-ng`, tools/install.sh installs it as root), 22,050 Hz output
             resampled to 16 kHz (scipy's polyphase filter), leading / trailing silence trimmed.
  fallback   per-letter segments: vowels are harmonic spectra of f0 shaped by two formants, consonants shorter
             segments with a letter-specific formant pair plus seeded noise, spaces short pauses. It is not
             intelligible speech, but each word has its own stable spectral pattern, which is what the demo's
             tokenizers and backbone learn from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import shutil
import subprocess

import numpy as np

SAMPLE_RATE = 16_000
SYNTHESISERS = ("espeak", "fallback")
_SILENCE_DB = -40.0        # trimming threshold relative to the peak
_TRIM_MARGIN_S = 0.05


@dataclasses.dataclass(frozen=True)
class Voice:
  """speed: words per minute (espeak-ng -s, 80..450); pitch: 0..99 (espeak-ng -p)."""
  speed: int = 170
  pitch: int = 50

  @property
  def name(self) -> str:
    return f"s{self.speed}_p{self.pitch}"


def espeak_binary() -> str | None:
  """Path of espeak-ng (or espeak), None when neither is installed."""
  return shutil.which("espeak-ng") or shutil.which("espeak")


def resolve(choice: str) -> str:
  """'auto' | 'espeak' | 'fallback' -> the synthesiser to use; 'espeak' without espeak-ng is an error."""
  if choice == "auto":
    return "espeak" if espeak_binary() else "fallback"
  if choice not in SYNTHESISERS:
    raise ValueError(f"corpus.synthesiser={choice!r}; use 'auto', 'espeak' or 'fallback'")
  if choice == "espeak" and not espeak_binary():
    raise RuntimeError("corpus.synthesiser='espeak' but espeak-ng is not installed: `apt-get install -y espeak-ng` "
                       "(tools/install.sh does this as root), or set corpus.synthesiser='auto' / 'fallback'")
  return choice


def version(synthesiser: str) -> str:
  """A description of the synthesiser (espeak-ng's version line), recorded in corpus.json."""
  if synthesiser == "fallback":
    return "omnidiff_jax.demo.speech fallback formant synthesiser"
  out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=True)
  return out.stdout.strip()


def synthesise(text: str, voice: Voice, synthesiser: str) -> np.ndarray:
  """text -> (N,) float32 16 kHz wave with `synthesiser` ('espeak' or 'fallback')."""
  if synthesiser == "espeak":
    return _espeak(text, voice)
  if synthesiser == "fallback":
    return fallback(text, voice)
  raise ValueError(f"unknown synthesiser {synthesiser!r}; expected one of {SYNTHESISERS}")


def _trim(wave: np.ndarray) -> np.ndarray:
  loud = np.flatnonzero(np.abs(wave) > np.abs(wave).max() * 10 ** (_SILENCE_DB / 20))
  margin = int(_TRIM_MARGIN_S * SAMPLE_RATE)
  return wave[max(loud[0] - margin, 0):loud[-1] + margin + 1]


def _espeak(text: str, voice: Voice) -> np.ndarray:
  import soundfile as sf
  from scipy import signal
  cmd = [espeak_binary(), "-v", "en-us", "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout", text]
  out = subprocess.run(cmd, capture_output=True, check=True)
  wave, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
  if wave.ndim > 1:
    wave = wave.mean(axis=1)
  if rate != SAMPLE_RATE:   # polyphase FIR (Kaiser window): 22,050 -> 16,000 Hz is up 320, down 441
    g = math.gcd(rate, SAMPLE_RATE)
    wave = signal.resample_poly(wave, SAMPLE_RATE // g, rate // g).astype(np.float32)
  return (_trim(wave) * 0.9 / max(np.abs(wave).max(), 1e-6)).astype(np.float32)


# Letter -> (first formant, second formant) in Hz; vowels get long voiced segments.
_VOWELS = {"a": (730, 1090), "e": (530, 1840), "i": (270, 2290), "o": (570, 840), "u": (300, 870),
           "y": (400, 2000)}


def _letter_formants(letter: str) -> tuple[float, float]:
  if letter in _VOWELS:
    return _VOWELS[letter]
  digest = hashlib.sha256(letter.encode()).digest()
  return 250 + 10 * digest[0] % 600, 1200 + 10 * (digest[1] % 200)


def _segment(letter: str, voice: Voice, rate: int) -> np.ndarray:
  """One letter's samples: harmonics of f0 weighted by two Gaussian formant peaks, a raised-cosine envelope."""
  scale = 170.0 / voice.speed
  if letter == " ":
    return np.zeros(int(0.06 * scale * rate), np.float32)
  vowel = letter in _VOWELS
  duration = (0.11 if vowel else 0.06) * scale
  t = np.arange(int(duration * rate)) / rate
  f0 = 90.0 + 1.6 * voice.pitch
  f1, f2 = _letter_formants(letter)
  wave = np.zeros_like(t)
  for k in range(1, int(3500 / f0)):
    fk = k * f0
    gain = np.exp(-((fk - f1) / 120) ** 2) + 0.6 * np.exp(-((fk - f2) / 180) ** 2)
    wave += gain * np.sin(2 * np.pi * fk * t)
  if not vowel:
    seed = int.from_bytes(hashlib.sha256(letter.encode()).digest()[:4], "little")
    wave = 0.6 * wave + 0.3 * np.random.default_rng(seed).standard_normal(t.shape)
  envelope = np.sin(np.pi * np.arange(t.size) / max(t.size - 1, 1)) ** 0.5
  return (wave * envelope).astype(np.float32)


def fallback(text: str, voice: Voice = Voice()) -> np.ndarray:
  """The fallback synthesiser: lower-cased letters and spaces of `text` (others skipped) -> 16 kHz wave."""
  letters = [c for c in text.lower() if c.isalpha() or c == " "]
  if not any(c.isalpha() for c in letters):
    raise ValueError(f"nothing to say in {text!r}: the fallback synthesiser needs letters")
  pad = np.zeros(int(_TRIM_MARGIN_S * SAMPLE_RATE), np.float32)
  wave = np.concatenate([pad] + [_segment(c, voice, SAMPLE_RATE) for c in letters] + [pad])
  return (wave * 0.9 / np.abs(wave).max()).astype(np.float32)
