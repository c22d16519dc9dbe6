"""Shared builder of the three curriculum stage configs (reference section 3.3, paper Table 4).

Stage 1 (visual-language pre-alignment): T2I, image captioning (vqa) and text, LR 1e-4.
Stage 2 (speech-vision-language joint alignment): stage 1 data + ASR, TTS, speech QA, VQA, LR 1e-4.
Stage 3 (speech-driven visual interaction): SDVI (spoken VQA, speech-to-image) + all, LR 1e-5.
Per-stage steps, batch and mixture weights are not published (UNVERIFIED); the defaults follow the released
SFT script: 128 packed rows of 3072 tokens per step, warmup 3 %.

`get_config('tiny')` gives the tiny model with short rows for CPU runs and tests.
"""
from omnidiff_jax.training.config import add_training_sections

MIXTURES = {
    "stage1": {"t2i": 1.0, "vqa": 1.0, "text": 1.0},
    "stage2": {"t2i": 1.0, "vqa": 1.0, "text": 1.0, "asr": 1.0, "tts": 1.0, "sqa": 1.0},
    "stage3": {"svqa": 1.0, "s2i": 1.0, "sqa": 1.0, "vqa": 1.0, "text": 1.0, "t2i": 1.0, "asr": 1.0, "tts": 1.0},
}
LEARNING_RATES = {"stage1": 1e-4, "stage2": 1e-4, "stage3": 1e-5}


def stage_config(stage: str, arg: str | None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown config argument {arg!r}; use ':tiny' or nothing")
  if arg == "tiny":
    from configs import tiny
    cfg = add_training_sections(tiny.get_config(), stage=stage, learning_rate=LEARNING_RATES[stage] * 30,
                                mixture=MIXTURES[stage], steps=40, global_rows=8, seq_len=64, warmup_steps=4)
    cfg.data.min_len, cfg.data.max_len = 4, 12
    cfg.checkpoint.save_every, cfg.metrics.log_every = 10, 5
    return cfg
  from configs import omni_7b
  cfg = add_training_sections(omni_7b.get_config(), stage=stage, learning_rate=LEARNING_RATES[stage],
                              mixture=MIXTURES[stage], steps=24_000, global_rows=128, seq_len=3072,
                              warmup_steps=720)
  return cfg
