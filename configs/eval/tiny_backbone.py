"""The tiny backbone (configs/tiny.py) with the vocabulary of tests/tiny_tokenizer.py (400 text ids) and the
13-bit codebook of the tiny MAGVIT-v2 (8,192 image codes): the random model of configs/eval/tiny.py."""
from configs import tiny
from omnidiff_jax import config as cfglib


def get_config():
  cfg = tiny.get_config()
  cfg.vocab = cfglib.vocab_config(text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64,
                                  num_image_codes=8192, size=8680)
  cfg.model.vocab_size = cfg.vocab.size
  return cfg
