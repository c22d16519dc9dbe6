"""Medium random Omni-layout model (32.9M parameters) for CPU benchmarks.

  python bench/bench_forward.py --config configs/medium.py
"""
from omnidiff_jax import config as cfglib


def get_config():
  vocab = cfglib.vocab_config(text_size=8_000, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=1_024,
                              num_image_codes=1_024, size=10_072)
  model = cfglib.model_config(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2, head_dim=64,
                              intermediate_size=1408, vocab_size=vocab.size)
  cfg = cfglib.base_config(vocab, model)
  cfg.model.param_dtype = "float32"
  cfg.model.dtype = "float32"
  cfg.run.seq_len = 256
  return cfg
