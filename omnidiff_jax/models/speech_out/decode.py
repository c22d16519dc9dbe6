"""Speech codes -> waveform: batched, jitted GLM-4-Voice decoding (flow -> mel -> HiFT) and WAV writing.

  dec = params.load_decoder(cfg, "ckpt/speech_decoder")   # omnidiff_jax.models.speech_out.params
  wavs = dec.decode([codes_a, codes_b])          # list of float32 (num_samples,) at 22,050 Hz
  decode_to_wav(codes, "out.wav", decoder=dec)   # the sampler's CLI calls this

Codes are the 0-based GLM-4-Voice speech codes (0..16383), i.e. vocabulary id minus the audio offset. A batch
is padded to a bucket of `token_bucket` tokens so that few shapes get compiled; each item gets
num_mel_frames(len) mel frames and 256 samples per frame. Noise comes from a JAX key (upstream's torch draws
cannot be reproduced; parity tests feed recorded noise to the model functions directly).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from omnidiff_jax.models.speech_out import flow as flowlib
from omnidiff_jax.models.speech_out import hift as hiftlib

SAMPLE_RATE = 22050


def build_models(cfg: ml_collections.ConfigDict, seed: int = 0):
  """Random-init (FlowModel, HiFTGenerator) for `cfg` (sections flow, hift)."""
  rngs = nnx.Rngs(seed)
  return flowlib.FlowModel(cfg.flow, rngs=rngs), hiftlib.HiFTGenerator(cfg.hift, rngs=rngs)


@functools.partial(jax.jit, static_argnames=("n_timesteps",))
def _mel(flow, tokens, token_lens, frame_lens, noise, cond, spk_embedding, n_timesteps):
  return flow(tokens, token_lens, frame_lens, noise, cond, spk_embedding, n_timesteps)


@jax.jit
def _wav(hift, mel, phase, noise):
  return hift(mel, phase, noise)


class SpeechDecoder:
  """Holds the flow model and the vocoder; `decode` turns lists of codes into waveforms."""

  def __init__(self, cfg: ml_collections.ConfigDict, flow: flowlib.FlowModel, hift: hiftlib.HiFTGenerator,
               token_bucket: int = 16):
    self.cfg, self.flow, self.hift, self.token_bucket = cfg, flow, hift, token_bucket

  def mel(self, codes: Sequence[np.ndarray], *, key: jax.Array, n_timesteps: int | None = None,
          prompt_codes: np.ndarray | None = None, prompt_mel: np.ndarray | None = None,
          spk_embedding: np.ndarray | None = None) -> list[np.ndarray]:
    """Mel spectrograms [(F_b, 80)] for a batch of code sequences.

    prompt_codes (P,) with prompt_mel (num_mel_frames(P), 80): optional prompt speech (its voice), shared by the
    batch; its frames are removed from the output. spk_embedding (192,): x-vector (upstream/Omni: zeros).
    """
    cfg = self.cfg.flow
    n_timesteps = n_timesteps or self.cfg.decode.n_timesteps
    prompt = np.zeros((0,), np.int32) if prompt_codes is None else np.asarray(prompt_codes, np.int32).reshape(-1)
    prompt_frames = 0 if prompt_mel is None else prompt_mel.shape[0]
    if (len(prompt) > 0) != (prompt_frames > 0):
      raise ValueError("prompt speech needs both prompt_codes and prompt_mel")
    seqs = [np.concatenate([prompt, np.asarray(c, np.int32).reshape(-1)]) for c in codes]
    for i, c in enumerate(codes):
      c = np.asarray(c)
      if c.size == 0 or c.min() < 0 or c.max() >= cfg.vocab_size:
        raise ValueError(f"codes[{i}]: expected a non-empty sequence of speech codes in [0, {cfg.vocab_size}), "
                         f"got {c.size} codes" + (f" in [{c.min()}, {c.max()}]" if c.size else ""))
    token_lens = np.array([len(s) for s in seqs], np.int32)
    width = -(-token_lens.max() // self.token_bucket) * self.token_bucket
    tokens = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
      tokens[i, :len(s)] = s
    frame_lens = flowlib.num_mel_frames(token_lens, cfg)
    num_frames = int(flowlib.num_mel_frames(width, cfg))
    cond = np.zeros((len(seqs), num_frames, cfg.output_size), np.float32)
    if prompt_frames:
      cond[:, :prompt_frames] = prompt_mel
    spk = np.zeros((len(seqs), cfg.spk_embed_dim), np.float32)
    if spk_embedding is not None:
      spk[:] = np.asarray(spk_embedding, np.float32).reshape(-1)
    noise = jax.random.normal(key, (len(seqs), num_frames, cfg.output_size), jnp.float32)
    mel = np.asarray(_mel(self.flow, tokens, token_lens, frame_lens, noise, cond, spk, n_timesteps))
    return [mel[i, prompt_frames:frame_lens[i]] for i in range(len(seqs))]

  def wav(self, mels: Sequence[np.ndarray], *, key: jax.Array) -> list[np.ndarray]:
    """Waveforms [(256 F_b,)] for mels [(F_b, 80)], vocoded as one zero-padded batch.

    A shorter item sees zeros (not the end of the signal) past its last frame, which changes only its last few
    frames' worth of samples (the convolution receptive field) compared with decoding it alone.
    """
    frames = max(m.shape[0] for m in mels)
    batch = np.zeros((len(mels), frames, mels[0].shape[1]), np.float32)
    for i, m in enumerate(mels):
      batch[i, :m.shape[0]] = m
    phase, noise = hiftlib.source_noise(key, len(mels), frames, self.cfg.hift)
    wav = np.asarray(_wav(self.hift, batch, phase, noise))
    hop = hiftlib.samples_per_frame(self.cfg.hift)
    return [wav[i, :m.shape[0] * hop] for i, m in enumerate(mels)]

  def decode(self, codes: Sequence[np.ndarray], *, seed: int | None = None, **mel_kwargs) -> list[np.ndarray]:
    """Speech codes -> float32 waveforms at 22,050 Hz (one per sequence)."""
    key_mel, key_wav = jax.random.split(jax.random.key(self.cfg.decode.seed if seed is None else seed))
    return self.wav(self.mel(codes, key=key_mel, **mel_kwargs), key=key_wav)


def decode_to_wav(codes, path: str, *, decoder: SpeechDecoder, seed: int | None = None, **mel_kwargs) -> np.ndarray:
  """Decodes one code sequence (or a batch: then `path` is a list of paths) and writes 16-bit WAV file(s)."""
  import soundfile  # pylint: disable=import-outside-toplevel
  batch = isinstance(path, (list, tuple))
  wavs = decoder.decode(codes if batch else [codes], seed=seed, **mel_kwargs)
  for p, w in zip(path if batch else [path], wavs):
    soundfile.write(p, w, SAMPLE_RATE, subtype="PCM_16")
  return wavs if batch else wavs[0]
