"""GLM-4-Voice speech decoder (speech codes -> 22,050 Hz waveform): flow-matching mel model + HiFT vocoder."""
from omnidiff_jax.models.speech_out.decode import SAMPLE_RATE, SpeechDecoder, build_models, decode_to_wav

__all__ = ["SAMPLE_RATE", "SpeechDecoder", "build_models", "decode_to_wav"]
