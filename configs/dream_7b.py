"""Dream-7B (Qwen2.5-7B shape, bidirectional), vocabulary 152,064.

  python tools/forward.py --config configs/dream_7b.py --config.mesh.fsdp=-1
"""
from omnidiff_jax import config as cfglib


def get_config():
  vocab = cfglib.vocab_config(text_size=151_667, num_specials=0, num_audio_codes=0, num_image_codes=0,
                              size=152_064)
  model = cfglib.model_config(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                              intermediate_size=18944, vocab_size=vocab.size)
  cfg = cfglib.base_config(vocab, model)
  cfg.model.param_dtype = "bfloat16"
  cfg.model.remat_policy = "full"
  return cfg
