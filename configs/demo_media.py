"""The demo's built-in corpus and the small media networks trained on it (tools/demo.py, omnidiff_jax.demo).

  get_config()         full demo (python tools/demo.py)
  get_config('quick')  quick demo (python tools/demo.py --quick, CI)

Sections:
  corpus:     pictures of coloured shapes, captions, VQA, chat lines, synthesised speech (omnidiff_jax.demo.corpus).
  magvit:     a small MAGVIT-v2 (LFQ) shaped like configs/magvit.py (model / image / run) plus `train`.
  whisper_vq: a small WhisperVQ shaped like configs/whisper_vq.py (frontend / encoder) plus `train` (k-means).
  sensevoice: a small SenseVoice encoder shaped like configs/sensevoice.py (frontend / encoder / projector), frozen
              random (seed); the projector section is the backbone's (its hidden_size must match the backbone).
  classifier: the shape + colour CNN that scores generated pictures.
"""
import ml_collections

from configs import sensevoice, whisper_vq
from omnidiff_jax.models.magvit import modeling as magvit

VARIANTS = ("full", "quick")


def get_config(arg=None):
  variant = arg or "full"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; use configs/demo_media.py or configs/demo_media.py:quick")
  quick = variant == "quick"
  cfg = ml_collections.ConfigDict()
  cfg.variant = variant
  cfg.corpus = ml_collections.ConfigDict(dict(
      image_size=32,
      # Shapes near the centre: x, y = (0.5 +- centre_jitter) x side, half-width size_range x side. With the
      # earlier +-0.1 and 0.25-0.36, a label's MAGVIT-v2 codes varied so much that the 2-layer model's T2I / S2I
      # pictures were near chance (T2I 0.156, S2I 0.062 against 0.125).
      centre_jitter=0.04, size_range=(0.29, 0.34),
      shapes=("circle", "square", "triangle", "cross"),      # from corpus.SHAPES
      colours=("red", "green", "blue", "yellow"),            # from corpus.COLOURS
      train_images=128 if quick else 512,
      heldout_images=32 if quick else 64,
      chat_train=64 if quick else 512,                       # text and spoken chat lines per split
      chat_heldout=16 if quick else 32,
      seed=0,                                                # split k draws from PCG64([seed, k])
      synthesiser="auto",                                    # 'auto' (espeak-ng if installed), 'espeak', 'fallback'
      sample_rate=16000))
  cfg.magvit = ml_collections.ConfigDict()
  # 32 px, 2 downsamplings (f = 4) -> 8 x 8 = 64 codes per picture; 8 LFQ bits -> 256 codes. No blocks at full
  # resolution (CPU time); GroupNorm with 8 groups (4 channels each, as the released model's first level) since
  # 32 groups of one channel each (instance norm) kept the model from learning colours in the CPU budget.
  cfg.magvit.model = magvit.model_config(ch=32, encoder_ch_mult=(1, 1, 2), encoder_num_res_blocks=(0, 1, 1),
                                         decoder_ch_mult=(1, 1, 2), decoder_num_res_blocks=(0, 1, 1),
                                         z_channels=8, norm_groups=8)
  cfg.magvit.image = ml_collections.ConfigDict(dict(resolution=32))
  cfg.magvit.run = ml_collections.ConfigDict(dict(batch_size=32, seed=0))
  # LFQ loss weights: Show-o's LFQuantizer defaults (beta 0.25, commit 0.1, entropy 0.1).
  cfg.magvit.train = ml_collections.ConfigDict(dict(
      steps=120 if quick else 600, batch_size=8 if quick else 16, learning_rate=3e-3, warmup_steps=20,
      quantize_ramp=0.5, beta=0.25, commit_weight=0.1, entropy_weight=0.1, seed=0))
  cfg.whisper_vq = ml_collections.ConfigDict()
  # Clips padded to whole 2 s (the corpus clips take 1 to 3 s): every WhisperVQ batch has one of two lengths, so
  # tokenizing and scoring compile it about twice instead of once per batch (80 ms, one token, by default).
  cfg.whisper_vq.frontend = whisper_vq.frontend_config(n_mels=32, batch_size=32, pad_to_multiple_of=32_000)
  cfg.whisper_vq.encoder = whisper_vq.encoder_config(
      num_mel_bins=32, d_model=64, attention_heads=4, ffn_dim=128, max_source_positions=512, quantize_position=2,
      pooling_position=1, codebook_size=64, block_size=16)
  cfg.whisper_vq.train = ml_collections.ConfigDict(dict(kmeans_iters=25, seed=0))
  cfg.sensevoice = ml_collections.ConfigDict()
  cfg.sensevoice.frontend = sensevoice.frontend_config(num_mel_bins=40, lfr_m=5, lfr_n=3)   # 200-d LFR frames
  cfg.sensevoice.encoder = sensevoice.encoder_config(input_size=200, output_size=64, attention_heads=4,
                                                     linear_units=128, num_blocks=2, tp_blocks=1)
  cfg.sensevoice.projector = sensevoice.projector_config(input_size=64, hidden_size=128)
  cfg.sensevoice.seed = 0
  cfg.classifier = ml_collections.ConfigDict(dict(
      widths=(16, 32, 32), hidden=64, steps=100 if quick else 250, batch_size=32, learning_rate=3e-3, seed=0))
  return cfg
