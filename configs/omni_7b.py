"""Omni-Diffusion 7B: Dream-7B with the vocabulary grown to 176,264 ids
(151,667 text + 21 specials + 16,384 speech codes + 8,192 image codes).

  python tools/forward.py --config configs/omni_7b.py
"""
from omnidiff_jax import config as cfglib


def get_config():
  vocab = cfglib.vocab_config(text_size=151_667, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=16_384,
                              num_image_codes=8_192, size=176_264)
  model = cfglib.model_config(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                              intermediate_size=18944, vocab_size=vocab.size)
  cfg = cfglib.base_config(vocab, model)
  cfg.model.param_dtype = "bfloat16"
  cfg.model.remat_policy = "full"
  return cfg
