"""SenseVoiceSmall speech-input path as Omni-Diffusion uses it: WavFrontend, encoder (frozen), projector.

  python tools/speech_tokenize.py sensevoice --config configs/sensevoice.py --params sv.safetensors a.wav
"""
import ml_collections


def frontend_config(**overrides) -> ml_collections.ConfigDict:
  """FunASR WavFrontend options. cmvn_file: SenseVoiceSmall's am.mvn ('' = no CMVN)."""
  cfg = ml_collections.ConfigDict(dict(
      cmvn_file="", sample_rate=16000, num_mel_bins=80, frame_length_ms=25.0, frame_shift_ms=10.0,
      window="hamming", lfr_m=7, lfr_n=6,
      # Upstream's WavFrontend dithers (1.0) at train and test time; 0 gives deterministic features.
      dither=0.0,
      # Longer clips raise BadAudioError (the data pipeline counts them as skips); 0 = no limit.
      max_seconds=0.0))
  cfg.update(overrides)
  return cfg


def encoder_config(**overrides) -> ml_collections.ConfigDict:
  """SenseVoiceEncoderSmall + query ids (language 0 = 'auto', text norm 15 = 'woitn')."""
  cfg = ml_collections.ConfigDict(dict(
      input_size=560, output_size=512, attention_heads=4, linear_units=2048, num_blocks=50, tp_blocks=20,
      kernel_size=11, sanm_shift=0, language_id=0, textnorm_id=15,
      # Upstream runs the frozen encoder in bfloat16 (inputs cast to bf16); float32 for parity checks.
      dtype="float32"))
  cfg.update(overrides)
  return cfg


def projector_config(**overrides) -> ml_collections.ConfigDict:
  """ResamplerProjector(512, backbone hidden size)."""
  cfg = ml_collections.ConfigDict(dict(input_size=512, hidden_size=3584, dtype="float32", param_dtype="float32"))
  cfg.update(overrides)
  return cfg


def get_config():
  cfg = ml_collections.ConfigDict()
  cfg.frontend = frontend_config()
  cfg.encoder = encoder_config()
  cfg.projector = projector_config()
  return cfg
