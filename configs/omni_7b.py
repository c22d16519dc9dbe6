"""Omni-Diffusion 7B: Dream-7B with the vocabulary grown to 176,264 ids
(151,667 text + 21 specials + 16,384 speech codes + 8,192 image codes).

  python tools/forward.py --config configs/omni_7b.py --cpu_devices=0 --mesh=1,-1,1
"""
from omnidiff_jax import config as cfglib


def get_config():
  return cfglib.qwen25_7b_config(cfglib.vocab_config(
      text_size=151_667, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=16_384, num_image_codes=8_192,
      size=176_264))
