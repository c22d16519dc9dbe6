"""GLM-4-Voice HiFT vocoder (CosyVoice `HiFTGenerator`): mel (B, F, 80) -> waveform (B, F * 256) at 22,050 Hz.

  f0 = |Linear(ELU(Conv1d k3) x 5 (mel))|                     (B, F)       ConvRNNF0Predictor
  source = tanh(Linear(SineGen(repeat(f0, 256))))            (B, 256F)    SourceModuleHnNSF (9 harmonics)
  S = STFT(source; n_fft 16, hop 4, Hann)  -> [real, imag]   (B, 64F+1, 18)
  x = conv_pre(mel); per stage i: lrelu(0.1) -> ConvTranspose1d(k16, s8, p4) (-> reflect-pad (1, 0) on the last)
      -> + source_resblocks[i](source_downs[i](S)) -> mean of 3 Snake ResBlocks
  x = conv_post(lrelu(0.01)(x)) -> magnitude exp(x[:9]) (<= 100), phase sin(x[9:]) -> iSTFT -> clip +-0.99.

SineGen's randomness is an explicit input: `phase` (B, H+1) uniform in [-pi, pi) (harmonic 0 is forced to 0)
and `noise` (B, 256F, H+1) standard normal; `source_noise` draws both with a JAX key. Weight-normed convs are
stored folded (the checkpoint converter computes g * v / ||v||). Names follow the torch module (hift.pt keys).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from omnidiff_jax.models.speech_out.layers import Act, Conv1d, ConvTranspose1d, Linear

Array = jax.Array


class Snake(nnx.Module):
  """x + sin^2(alpha x) / (alpha + 1e-9), alpha per channel (linear scale)."""

  def __init__(self, channels: int):
    self.alpha = nnx.Param(jnp.ones((channels,), jnp.float32))

  def __call__(self, x: Array) -> Array:
    a = self.alpha[...]
    return x + jnp.square(jnp.sin(x * a)) / (a + 1e-9)


class ResBlock(nnx.Module):
  """For each dilation d: x += conv2(snake2(conv1_d(snake1(x))))."""

  def __init__(self, channels: int, kernel: int, dilations, *, rngs: nnx.Rngs):
    self.convs1 = nnx.List([Conv1d(channels, channels, kernel, padding=(kernel * d - d) // 2, dilation=d, rngs=rngs)
                            for d in dilations])
    self.convs2 = nnx.List([Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2, rngs=rngs)
                            for _ in dilations])
    self.activations1 = nnx.List([Snake(channels) for _ in dilations])
    self.activations2 = nnx.List([Snake(channels) for _ in dilations])

  def __call__(self, x: Array) -> Array:
    for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
      x = x + c2(a2(c1(a1(x))))
    return x


class F0Predictor(nnx.Module):
  """ConvRNNF0Predictor: condnet = [Conv1d k3, ELU] x 5, classifier Linear -> 1, abs. (B, F, C) -> (B, F)."""

  def __init__(self, in_channels: int, cond_channels: int, *, rngs: nnx.Rngs):
    layers = []
    for i in range(5):
      layers += [Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1, rngs=rngs), Act()]
    self.condnet = nnx.List(layers)
    self.classifier = Linear(cond_channels, 1, rngs=rngs)

  def __call__(self, mel: Array) -> Array:
    x = mel
    for conv in self.condnet[::2]:
      x = jax.nn.elu(conv(x))
    return jnp.abs(self.classifier(x)[..., 0])


class SourceModule(nnx.Module):
  """SourceModuleHnNSF's trainable part: l_linear (H+1 -> 1) + tanh over the SineGen harmonics."""

  def __init__(self, num_harmonics: int, *, rngs: nnx.Rngs):
    self.l_linear = Linear(num_harmonics + 1, 1, rngs=rngs)

  def __call__(self, sines: Array) -> Array:
    return jnp.tanh(self.l_linear(sines))


def sine_gen(f0: Array, phase: Array, noise: Array, cfg: ml_collections.ConfigDict) -> Array:
  """SineGen. f0: (B, S) Hz at the sample rate; phase: (B, H+1); noise: (B, S, H+1) -> (B, S, H+1)."""
  harmonics = jnp.arange(1, cfg.nb_harmonics + 2, dtype=jnp.float32)
  freq = f0[..., None] * harmonics / cfg.sampling_rate
  theta = 2 * jnp.pi * jnp.mod(jnp.cumsum(freq, axis=1), 1.0)
  phase = jnp.asarray(phase).at[:, 0].set(0.0)
  sines = cfg.nsf_alpha * jnp.sin(theta + phase[:, None, :])
  uv = (f0 > cfg.nsf_voiced_threshold).astype(jnp.float32)[..., None]
  noise_amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
  return sines * uv + noise_amp * noise


def source_noise(key: Array, batch: int, num_frames: int, cfg: ml_collections.ConfigDict) -> tuple[Array, Array]:
  """Random SineGen inputs for `num_frames` mel frames: phase (B, H+1), noise (B, num_frames * 256, H+1)."""
  k1, k2 = jax.random.split(key)
  h = cfg.nb_harmonics + 1
  phase = jax.random.uniform(k1, (batch, h), jnp.float32, -math.pi, math.pi)
  noise = jax.random.normal(k2, (batch, num_frames * samples_per_frame(cfg), h), jnp.float32)
  return phase, noise


def samples_per_frame(cfg: ml_collections.ConfigDict) -> int:
  return math.prod(cfg.upsample_rates) * cfg.hop_len


def hann_window(n: int) -> Array:
  """Periodic Hann window (scipy get_window('hann', n, fftbins=True))."""
  return (0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(n, dtype=jnp.float32) / n)).astype(jnp.float32)


def _frames(x: Array, n_fft: int, hop: int) -> Array:
  """Overlapping frames (B, (S - n_fft) // hop + 1, n_fft) of x (B, S) via hop-sized blocks (n_fft % hop == 0)."""
  per = n_fft // hop
  num = (x.shape[1] - n_fft) // hop + 1
  blocks = x[:, :(num + per - 1) * hop].reshape(x.shape[0], num + per - 1, hop)
  return jnp.concatenate([blocks[:, k:k + num] for k in range(per)], axis=-1)


def _overlap_add(frames: Array, hop: int) -> Array:
  """Inverse of _frames: sums frames (B, T, n_fft) at hop spacing -> (B, n_fft + hop * (T - 1))."""
  b, t, n_fft = frames.shape
  per = n_fft // hop
  out = jnp.zeros((b, t + per - 1, hop), frames.dtype)
  for k in range(per):
    out = out.at[:, k:k + t].add(frames[:, :, k * hop:(k + 1) * hop])
  return out.reshape(b, -1)


def stft(x: Array, n_fft: int, hop: int) -> tuple[Array, Array]:
  """torch.stft(center=True, reflect pad, Hann, onesided). x: (B, S) -> real, imag: (B, S // hop + 1, n_fft//2+1)."""
  pad = n_fft // 2
  x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
  spec = jnp.fft.rfft(_frames(x, n_fft, hop) * hann_window(n_fft), axis=-1)
  return jnp.real(spec).astype(jnp.float32), jnp.imag(spec).astype(jnp.float32)


def istft(real: Array, imag: Array, n_fft: int, hop: int) -> Array:
  """torch.istft(center=True, Hann): (B, T, n_fft//2+1) -> (B, hop * (T - 1)), window-envelope normalised."""
  window = hann_window(n_fft)
  frames = jnp.fft.irfft(jax.lax.complex(real, imag), n=n_fft, axis=-1).astype(jnp.float32) * window
  signal = _overlap_add(frames, hop)
  envelope = _overlap_add(jnp.broadcast_to(window * window, (1,) + frames.shape[1:]), hop)
  pad = n_fft // 2
  return signal[:, pad:-pad] / envelope[:, pad:-pad]


class HiFTGenerator(nnx.Module):
  """mel (B, F, 80), phase (B, H+1), noise (B, 256F, H+1) -> waveform (B, 256F)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.cfg = cfg
    base, n_fft = cfg.base_channels, cfg.n_fft
    self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_cond_channels, rngs=rngs)
    self.m_source = SourceModule(cfg.nb_harmonics, rngs=rngs)
    self.conv_pre = Conv1d(cfg.in_channels, base, 7, padding=3, rngs=rngs)
    self.ups = nnx.List([
        ConvTranspose1d(base // 2**i, base // 2**(i + 1), k, stride=u, padding=(k - u) // 2, rngs=rngs)
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
    down_rates = [1] + list(cfg.upsample_rates[::-1][:-1])
    cum_rates = [math.prod(down_rates[:i + 1]) for i in range(len(down_rates))][::-1]
    self.source_downs, self.source_resblocks = nnx.List([]), nnx.List([])
    for i, (u, k, d) in enumerate(zip(cum_rates, cfg.source_resblock_kernel_sizes,
                                      cfg.source_resblock_dilation_sizes)):
      ch = base // 2**(i + 1)
      self.source_downs.append(Conv1d(n_fft + 2, ch, 1, rngs=rngs) if u == 1 else
                               Conv1d(n_fft + 2, ch, u * 2, stride=u, padding=u // 2, rngs=rngs))
      self.source_resblocks.append(ResBlock(ch, k, d, rngs=rngs))
    self.resblocks = nnx.List([
        ResBlock(base // 2**(i + 1), k, d, rngs=rngs)
        for i in range(len(cfg.upsample_rates))
        for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
    self.conv_post = Conv1d(base // 2**len(cfg.upsample_rates), n_fft + 2, 7, padding=3, rngs=rngs)

  def source(self, mel: Array, phase: Array, noise: Array) -> Array:
    """Harmonic source signal (B, 256F)."""
    f0 = jnp.repeat(self.f0_predictor(mel), samples_per_frame(self.cfg), axis=1)
    return self.m_source(sine_gen(f0, phase, noise, self.cfg))[..., 0]

  def __call__(self, mel: Array, phase: Array, noise: Array) -> Array:
    cfg = self.cfg
    n_fft, half = cfg.n_fft, cfg.n_fft // 2 + 1
    s_real, s_imag = stft(self.source(mel, phase, noise), n_fft, cfg.hop_len)
    s = jnp.concatenate([s_real, s_imag], axis=-1)
    x = self.conv_pre(mel)
    num_kernels = len(cfg.resblock_kernel_sizes)
    for i, up in enumerate(self.ups):
      x = up(jax.nn.leaky_relu(x, cfg.lrelu_slope))
      if i == len(self.ups) - 1:
        x = jnp.pad(x, ((0, 0), (1, 0), (0, 0)), mode="reflect")
      x = x + self.source_resblocks[i](self.source_downs[i](s))
      x = sum(self.resblocks[i * num_kernels + j](x) for j in range(num_kernels)) / num_kernels
    x = self.conv_post(jax.nn.leaky_relu(x, 0.01))
    magnitude = jnp.minimum(jnp.exp(x[..., :half]), 1e2)
    phase_out = jnp.sin(x[..., half:])
    wav = istft(magnitude * jnp.cos(phase_out), magnitude * jnp.sin(phase_out), n_fft, cfg.hop_len)
    return jnp.clip(wav, -cfg.audio_limit, cfg.audio_limit)
