"""Tiny random GLM-4-Voice speech decoder for tests, fixtures and CPU benchmarks.

Production structure (same mel/frame/sample ratios, 80 mels, 9 harmonics, iSTFT 16/4) with small widths:
encoder 32 wide, 2 heads, 2 blocks, block 4; U-Net channels (32, 32), 1 block, 1 mid block, 2 heads x 16;
2 regulator convs; HiFT base 32 channels. Vocabulary 64 codes.
"""
from omnidiff_jax.models.speech_out import config as sdcfg


def get_config():
  cfg = sdcfg.decoder_config(vocab_size=64, input_size=32, heads=2, linear_units=64, num_blocks=2, block_size=4,
                             num_regulator_convs=2, channels=(32, 32), attention_head_dim=16, n_blocks=1,
                             num_mid_blocks=1, num_heads=2)
  cfg.hift = sdcfg.hift_config(base_channels=32, f0_cond_channels=32)
  return cfg
