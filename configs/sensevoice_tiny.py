"""Tiny random SenseVoice encoder + projector for tests (the shapes of tests/fixtures/speech_in_sensevoice.npz).

The projector's hidden size matches configs/tiny.py's backbone (128) so spliced features can feed it.
"""
from configs import sensevoice


def get_config():
  cfg = sensevoice.get_config()
  cfg.frontend = sensevoice.frontend_config(num_mel_bins=8, lfr_m=3, lfr_n=2)   # 24-d LFR frames
  cfg.encoder = sensevoice.encoder_config(input_size=24, output_size=32, attention_heads=4, linear_units=64,
                                          num_blocks=3, tp_blocks=2)
  cfg.projector = sensevoice.projector_config(input_size=32, hidden_size=128)
  return cfg
