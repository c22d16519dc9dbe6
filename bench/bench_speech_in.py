"""Speech-in throughput, in seconds of audio processed per second: ours vs the upstream PyTorch references on
the same CPU, same random weights (fp32).

  front ends   ours (NumPy) vs FunASR WavFrontend (kaldi-native-fbank as its fbank) and transformers'
               WhisperFeatureExtractor
  sensevoice   our jitted SenseVoiceEncoder vs Omni's SenseVoiceSmall.inference_encode (real config by default)
  whisper_vq   our jitted WhisperVQEncoder vs GLM-4-Voice's WhisperVQEncoder (real width; --whisper_layers to
               cut the 16 layers short on a small machine)

The upstream code is imported from paths, as in tests/fixtures/make_speech_in_fixtures.py:
  python bench/bench_speech_in.py --omni_dream_dir /tmp/up --funasr_frontend /tmp/up/wav_frontend.py \
      --glm_dir /tmp/glm --seconds 10
"""
import argparse
import os
import platform
import sys

from timing import LoadGuard, mean_seconds

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))


def _report(name, seconds, t_ours, t_ref):
  print(f"{name:<28} ours {seconds / t_ours:9.1f} audio-s/s   reference {seconds / t_ref:9.1f} audio-s/s   "
        f"ratio {t_ref / t_ours:5.2f}x")


def bench_frontends(args, wave):
  import numpy as np
  import torch
  import make_speech_in_fixtures as fx
  from transformers import WhisperFeatureExtractor
  from omnidiff_jax.models.speech_in import frontend as af

  fx.install_funasr_stubs()
  ref_frontend = fx.load_funasr_frontend(args.funasr_frontend).WavFrontend(
      fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10, lfr_m=7, lfr_n=6, dither=0.0)
  ours = af.SenseVoiceFrontend()
  t_ours = mean_seconds(lambda: ours(wave, 16000), args.iters)
  t_ref = mean_seconds(lambda: ref_frontend(torch.from_numpy(wave)[None], [wave.size]), args.iters)
  _report("sensevoice front end", args.seconds, t_ours, t_ref)

  fe = WhisperFeatureExtractor(feature_size=128)
  ours_w = af.WhisperFrontend()
  t_ours = mean_seconds(lambda: ours_w([wave]), args.iters)
  t_ref = mean_seconds(lambda: fe([wave], sampling_rate=16000, return_attention_mask=True, return_tensors="pt",
                           device="cpu", padding="longest", pad_to_multiple_of=1280), args.iters)
  _report("whisper log-mel (128)", args.seconds, t_ours, t_ref)
  return np.asarray(ours(wave, 16000)), ours_w([wave])


def bench_sensevoice(args, lfr):
  import jax.numpy as jnp
  import torch
  from flax import nnx
  import make_speech_in_fixtures as fx
  from configs import sensevoice as sv_cfg
  from omnidiff_jax.models.speech_in import params as speech_in
  from omnidiff_jax.models.speech_in import sensevoice

  cfg = sv_cfg.get_config().encoder
  conf = {k: cfg[k] for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks",
                              "kernel_size")}
  mod = fx.load_module(os.path.join(args.omni_dream_dir, "modeling_sensevoice.py"), "omni_modeling_sensevoice")
  ref = mod.SenseVoiceSmall(encoder="SenseVoiceEncoderSmall", encoder_conf=conf, input_size=cfg.input_size,
                            vocab_size=16).eval()
  ours = speech_in.abstract(sensevoice.SenseVoiceEncoder, cfg)
  speech_in.load_sensevoice(ours, {k: v.numpy() for k, v in ref.state_dict().items()})
  feats = torch.from_numpy(lfr)[None]
  lengths = torch.tensor([lfr.shape[0]])
  forward = nnx.jit(lambda m, x, l: m(x, l)[0])
  x, l = jnp.asarray(lfr[None]), jnp.asarray([lfr.shape[0]], jnp.int32)
  t_ours = mean_seconds(lambda: forward(ours, x, l).block_until_ready(), args.iters)
  with torch.no_grad():
    t_ref = mean_seconds(lambda: ref.inference_encode(feats, data_lengths=lengths.clone(), device="cpu"), args.iters)
  _report(f"sensevoice encoder ({cfg.num_blocks}+{cfg.tp_blocks})", args.seconds, t_ours, t_ref)


def bench_whisper_vq(args, mels):
  import jax.numpy as jnp
  import torch
  from flax import nnx
  from configs import whisper_vq as vq_cfg
  from omnidiff_jax.models.speech_in import params as speech_in
  from omnidiff_jax.models.speech_in import whisper_vq

  sys.path.insert(0, args.glm_dir)
  from speech_tokenizer.configuration_whisper import WhisperVQConfig
  from speech_tokenizer.modeling_whisper import WhisperVQEncoder

  cfg = vq_cfg.get_config().encoder
  n = args.whisper_layers or cfg.quantize_position
  cfg.quantize_position = cfg.pooling_position = n
  ref = WhisperVQEncoder(WhisperVQConfig(
      d_model=cfg.d_model, encoder_layers=n, encoder_attention_heads=cfg.attention_heads,
      encoder_ffn_dim=cfg.ffn_dim, num_mel_bins=cfg.num_mel_bins, max_source_positions=cfg.max_source_positions,
      quantize_encoder_only=True, quantize_position=n, pooling_position=n, pooling_kernel_size=4,
      pooling_type="avg", quantize_vocab_size=cfg.codebook_size, encoder_causal_convolution=True,
      quantize_causal_block_size=cfg.block_size)).eval()
  ours = speech_in.abstract(whisper_vq.WhisperVQEncoder, cfg)
  speech_in.load_whisper_vq(ours, {k: v.numpy() for k, v in ref.state_dict().items()})
  feats, mask = mels
  forward = nnx.jit(lambda m, x, k: m(x, k)[0])
  x, k = jnp.asarray(feats), jnp.asarray(mask)
  t_ours = mean_seconds(lambda: forward(ours, x, k).block_until_ready(), args.iters)
  tf, tm = torch.from_numpy(feats).transpose(1, 2).contiguous(), torch.from_numpy(mask).long()
  with torch.no_grad():
    t_ref = mean_seconds(lambda: ref(input_features=tf, attention_mask=tm), args.iters)
  _report(f"whisper_vq encoder ({n} layers)", args.seconds, t_ours, t_ref)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--omni_dream_dir", required=True)
  parser.add_argument("--funasr_frontend", required=True)
  parser.add_argument("--glm_dir", required=True)
  parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clip")
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--whisper_layers", type=int, default=0, help="0 = the real 16")
  parser.add_argument("--parts", default="frontends,sensevoice,whisper_vq")
  args = parser.parse_args()

  import jax
  import torch
  import make_speech_in_fixtures as fx
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"torch {torch.__version__}; clip {args.seconds} s")
  wave = fx.synthetic_wave(args.seconds, 16000, 0)
  lfr, mels = bench_frontends(args, wave)
  parts = args.parts.split(",")
  if "sensevoice" in parts:
    bench_sensevoice(args, lfr)
  if "whisper_vq" in parts:
    bench_whisper_vq(args, mels)


if __name__ == "__main__":
  with LoadGuard():
    main()
