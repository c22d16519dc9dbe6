"""Dream-7B (Qwen2.5-7B shape, bidirectional), vocabulary 152,064.

  python tools/forward.py --config configs/dream_7b.py --cpu_devices=0 --mesh=1,-1,1
"""
from omnidiff_jax import config as cfglib


def get_config():
  return cfglib.qwen25_7b_config(cfglib.vocab_config(
      text_size=151_667, num_specials=0, num_audio_codes=0, num_image_codes=0, size=152_064))
