"""Tiny random WhisperVQ tokenizer for tests (the shapes of tests/fixtures/speech_in_whisper_vq.npz).

3 layers with pooling after layer 2, so one layer runs at the pooled rate (block 8 / 4 = 2).
"""
from configs import whisper_vq


def get_config():
  cfg = whisper_vq.get_config()
  cfg.frontend = whisper_vq.frontend_config(n_mels=16, batch_size=4)
  cfg.encoder = whisper_vq.encoder_config(num_mel_bins=16, d_model=64, attention_heads=4, ffn_dim=128,
                                          max_source_positions=128, quantize_position=3, pooling_position=2,
                                          codebook_size=32, block_size=8)
  return cfg
