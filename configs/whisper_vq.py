"""GLM-4-Voice speech tokenizer (THUDM/glm-4-voice-tokenizer): Whisper-large-v3 encoder cut at layer 16,
avg-pool 4, 16,384-code VQ; 12.5 codes per second.

  python tools/speech_tokenize.py whisper_vq --config configs/whisper_vq.py --params vq.safetensors a.wav
"""
import ml_collections


def encoder_config(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      num_mel_bins=128, d_model=1280, attention_heads=20, ffn_dim=5120, max_source_positions=1500,
      quantize_position=16, pooling_position=16, pooling_kernel_size=4, codebook_size=16384,
      # quantize_causal_block_size, in conv-output frames (20 ms): 200 = 4 s blocks.
      block_size=200, dtype="float32"))
  cfg.update(overrides)
  return cfg


def frontend_config(**overrides) -> ml_collections.ConfigDict:
  """WhisperFeatureExtractor settings and the segmenting of extract_speech_token."""
  cfg = ml_collections.ConfigDict(dict(
      n_mels=128, n_fft=400, hop_length=160, sample_rate=16000, pad_to_multiple_of=1280, segment_seconds=30.0,
      batch_size=128, max_seconds=0.0))
  cfg.update(overrides)
  return cfg


def get_config():
  cfg = ml_collections.ConfigDict()
  cfg.frontend = frontend_config()
  cfg.encoder = encoder_config()
  return cfg
