"""Tiny random Omni model for tests, the demo and CPU benchmarks.

Same vocabulary structure as omni_7b (text ids, then 21 specials, speech codes, image codes; mask, eos and
im_end at the same offsets from the end of the text ids) with a 320-row vocabulary.

  python tools/forward.py --config configs/tiny.py --config.model.num_layers=4
"""
from omnidiff_jax import config as cfglib


def get_config():
  vocab = cfglib.vocab_config(text_size=200, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64,
                              num_image_codes=32, size=320)
  model = cfglib.model_config(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32,
                              intermediate_size=256, vocab_size=vocab.size)
  cfg = cfglib.base_config(vocab, model)
  cfg.model.param_dtype = "float32"
  cfg.model.dtype = "float32"
  cfg.run.seq_len = 128
  return cfg
