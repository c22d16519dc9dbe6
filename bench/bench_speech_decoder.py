"""Real-time factor of the GLM-4-Voice speech decoder (codes -> waveform), ours (JAX, jitted) vs the upstream
PyTorch decoder on the same CPU, same architecture, random weights, batch 1.

RTF = wall time / audio duration (lower is better; < 1 is faster than real time). Ours is timed after
compilation (compile time printed separately); both sides run flow (n Euler steps, CFG) + HiFT. The PyTorch
side imports upstream code from local snapshots (see tests/fixtures/make_speech_decoder_fixtures.py for how to
get them); without --glm only ours is timed.

  python bench/bench_speech_decoder.py --config configs/speech_decoder.py --tokens 50 \
      --glm /tmp/glm_omni --matcha /tmp/matcha --diffusers /tmp/pydeps
"""
import argparse
import importlib.util
import os
import pathlib
import sys
import time

import numpy as np
from timing import LoadGuard  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_config(path):
  spec = importlib.util.spec_from_file_location("decoder_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def torch_decoder(cfg, glm, matcha, diffusers):
  """The upstream MaskedDiffWithXvec + HiFTGenerator for `cfg`, random weights, eval mode."""
  sys.path.insert(0, str(ROOT / "tests" / "fixtures"))  # the fixture script imports provenance.py beside it
  spec = importlib.util.spec_from_file_location(
      "fixture_script", ROOT / "tests" / "fixtures" / "make_speech_decoder_fixtures.py")
  fixture_script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fixture_script)
  DictConfig = fixture_script.install_stubs(glm, matcha, diffusers)
  from cosyvoice.flow.decoder import ConditionalDecoder
  from cosyvoice.flow.flow import MaskedDiffWithXvec
  from cosyvoice.flow.flow_matching import ConditionalCFM
  from cosyvoice.flow.length_regulator import InterpolateRegulator
  from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
  from cosyvoice.hifigan.generator import HiFTGenerator
  from cosyvoice.transformer.encoder import BlockConformerEncoder
  f, e, est, h = cfg.flow, cfg.flow.encoder, cfg.flow.cfm.estimator, cfg.hift
  encoder = BlockConformerEncoder(
      input_size=e.input_size, output_size=e.output_size, attention_heads=e.attention_heads,
      linear_units=e.linear_units, num_blocks=e.num_blocks, input_layer="linear", pos_enc_layer_type="rel_pos_espnet",
      selfattention_layer_type="block_rel_selfattn", block_size=e.block_size, use_cnn_module=False,
      macaron_style=False)
  cfm_params = DictConfig(sigma_min=1e-6, solver="euler", t_scheduler="cosine", training_cfg_rate=0.2,
                          inference_cfg_rate=f.cfm.inference_cfg_rate, reg_loss_type="l1")
  estimator = ConditionalDecoder(
      in_channels=est.in_channels, out_channels=est.out_channels, channels=list(est.channels), dropout=0.0,
      attention_head_dim=est.attention_head_dim, n_blocks=est.n_blocks, num_mid_blocks=est.num_mid_blocks,
      num_heads=est.num_heads, act_fn="gelu")
  flow = MaskedDiffWithXvec(
      input_size=f.input_size, output_size=f.output_size, spk_embed_dim=f.spk_embed_dim, vocab_size=f.vocab_size,
      input_frame_rate=f.input_frame_rate, encoder=encoder,
      length_regulator=InterpolateRegulator(f.output_size, [1] * f.num_regulator_convs),
      decoder=ConditionalCFM(240, cfm_params, n_spks=1, spk_emb_dim=80, estimator=estimator)).eval()
  hift = HiFTGenerator(base_channels=h.base_channels,
                       f0_predictor=ConvRNNF0Predictor(cond_channels=h.f0_cond_channels)).eval()
  return flow, hift


def time_best(fn, repeats):
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=str(ROOT / "configs" / "speech_decoder.py"))
  parser.add_argument("--tokens", type=int, default=50, help="speech codes per utterance (12.5 per second)")
  parser.add_argument("--steps", type=int, default=10, help="Euler steps")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (best is reported)")
  parser.add_argument("--glm", help="GLM-4-Voice snapshot (cosyvoice/); enables the PyTorch reference")
  parser.add_argument("--matcha")
  parser.add_argument("--diffusers")
  args = parser.parse_args()

  import jax
  from omnidiff_jax.models.speech_out import SpeechDecoder, build_models
  from omnidiff_jax.models.speech_out.flow import num_mel_frames

  cfg = load_config(args.config)
  codes = np.random.default_rng(0).integers(0, cfg.flow.vocab_size, args.tokens).astype(np.int32)
  seconds = int(num_mel_frames(args.tokens, cfg.flow)) * 256 / 22050
  print(f"config {os.path.basename(args.config)}, {args.tokens} tokens = {seconds:.2f} s of audio, "
        f"{args.steps} Euler steps, {jax.devices()[0].platform}")

  decoder = SpeechDecoder(cfg, *build_models(cfg), token_bucket=args.tokens)
  run = lambda: decoder.decode([codes], n_timesteps=args.steps)
  start = time.perf_counter()
  run()
  print(f"ours: first call (compile + run) {time.perf_counter() - start:.1f} s")
  ours = time_best(run, args.repeats)
  key = jax.random.key(0)
  mels = decoder.mel([codes], key=key, n_timesteps=args.steps)
  ours_hift = time_best(lambda: decoder.wav(mels, key=key), args.repeats)
  print(f"ours:    {ours:.3f} s  RTF {ours / seconds:.3f}  (HiFT {ours_hift:.3f} s)")

  if args.glm:
    import torch
    flow, hift = torch_decoder(cfg, args.glm, args.matcha, args.diffusers)
    tok = torch.from_numpy(codes)[None]

    def reference():
      with torch.inference_mode():
        mel = flow.inference(tok, torch.tensor([args.tokens], dtype=torch.int32), torch.zeros(1, 0, dtype=torch.int32),
                             torch.tensor([0], dtype=torch.int32), torch.zeros(1, 0, 80),
                             torch.tensor([0], dtype=torch.int32), torch.zeros(1, 192), option_steps=args.steps)
        return hift.inference(mel)[0]

    reference()  # warm-up
    ref = time_best(reference, args.repeats)
    mel = torch.randn(1, 80, int(num_mel_frames(args.tokens, cfg.flow)))
    with torch.inference_mode():
      ref_hift = time_best(lambda: hift.inference(mel), args.repeats)
    print(f"pytorch: {ref:.3f} s  RTF {ref / seconds:.3f}  (HiFT {ref_hift:.3f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print(f"speed-up ours vs pytorch: {ref / ours:.2f}x")


if __name__ == "__main__":
  with LoadGuard():
    main()
