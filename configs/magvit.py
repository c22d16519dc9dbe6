"""MAGVIT-v2 image tokenizer (Show-o `showlab/magvitv2`): the released model, or a tiny random one for tests.

  python tools/magvit.py encode --config configs/magvit.py --checkpoint magvit.safetensors ...
  python tools/magvit.py encode --config configs/magvit.py:tiny ...     # tiny random model (tests, demos)

Sections:
  model: the network shape (upstream `VQGANEncoder` / `VQGANDecoder` / `LFQuantizer` arguments) and dtypes.
  image: preprocessing (square side after the shorter-side bicubic resize and center crop).
  run:   batch size of the CLI and benchmarks; seed of random weights when no checkpoint is given.
"""
import ml_collections

from omnidiff_jax.models.magvit import modeling as magvit


def get_config(arg=None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown variant {arg!r}; use configs/magvit.py or configs/magvit.py:tiny")
  cfg = ml_collections.ConfigDict()
  cfg.model = magvit.model_config()
  # 256 px -> 16 x 16 = 256 codes (generation); 512 px -> 32 x 32 = 1024 codes (understanding).
  cfg.image = ml_collections.ConfigDict(dict(resolution=256))
  cfg.run = ml_collections.ConfigDict(dict(batch_size=8, seed=0))
  if arg == "tiny":
    # Every channel count a multiple of 32 (GroupNorm(32)); 3 levels (f = 4) with unequal block counts so the
    # level indexing is exercised; the real 13-bit LFQ. 32 px -> 8 x 8 = 64 codes.
    cfg.model.update(ch=32, encoder_ch_mult=(1, 1, 2), encoder_num_res_blocks=(1, 2, 1),
                     decoder_ch_mult=(1, 2, 2), decoder_num_res_blocks=(2, 1, 1))
    cfg.image.resolution = 32
    cfg.run.batch_size = 2
  return cfg
