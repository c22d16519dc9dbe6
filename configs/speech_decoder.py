"""GLM-4-Voice speech decoder (THUDM/glm-4-voice-decoder config.yaml): flow model + HiFT vocoder.

Values from the released decoder's config.yaml (flow: MaskedDiffWithXvec with a BlockConformerEncoder, 4
regulator convs, ConditionalDecoder channels (256, 256) x 4 blocks x 12 mid blocks; HiFT base 512, 8 harmonics,
upsample [8, 8], iSTFT 16/4). Omni-Diffusion decodes with 10 Euler steps, an empty prompt and a zero x-vector.

  python tools/speech_decode.py --config configs/speech_decoder.py --ckpt ckpt/speech_decoder \
      --codes codes.npy --out out.wav
"""
from omnidiff_jax.models.speech_out import config as sdcfg


def get_config():
  return sdcfg.decoder_config()
