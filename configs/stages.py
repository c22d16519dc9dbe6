"""Shared builder of the three curriculum stage configs (reference section 3.3, paper Table 4).

Stage 1 (visual-language pre-alignment): T2I, image captioning (vqa) and text, LR 1e-4.
Stage 2 (speech-vision-language joint alignment): stage 1 data + ASR, TTS, speech QA, VQA, LR 1e-4.
Stage 3 (speech-driven visual interaction): SDVI (spoken VQA, speech-to-image) + SQA + VQA, LR 1e-5.
Sources and weights come from omnidiff_jax.data.stages (the 7B configs read the tokenized ArrayRecord shards
of each source under DATA_ROOT). Per-stage steps and batch are not published (UNVERIFIED); the defaults follow
the released SFT script: 128 packed rows of 3072 tokens per step, warmup 3 %.

`get_config('tiny')` gives the tiny model with short rows for CPU runs and tests.

Mixed precision as MaxText: f32 parameters and optimizer state (Adam's updates at stage 3's LR 1e-5 would
mostly round to zero on bf16 weights), bf16 matmuls and activations, full remat. The tiny model takes the same
settings (TRAINING_MODEL) and differs in shape only. Inference loads the checkpoints in bf16
(omnidiff_jax.checkpoints.orbax_io.load(dtype='bfloat16'), as configs/omni_7b.py stores them).
configs/tpu/ and configs/gpu/ hold per-topology variants (mesh, attention kernel, remat, accumulation).

Every stage's model has the speech-input projector (`model.audio_projector`, input width data.feature_dim =
the SenseVoice encoder's output width: 512, tiny 32 as configs/sensevoice_tiny.py), so the parameter tree is
the same in all stages; it only receives gradients from rows with user speech (data.feature_rows > 0).
"""
import os

from configs import sensevoice, sensevoice_tiny
from omnidiff_jax.data import stages as data_stages
from omnidiff_jax.training.config import add_training_sections

LEARNING_RATES = {"stage1": 1e-4, "stage2": 1e-4, "stage3": 1e-5}
# Where tools/tokenize_data.py wrote each source's ArrayRecord shards (<root>/<source>/); override with
# --config.data.sources.<name>.path=...
DATA_ROOT = "data/tokenized"
# Non-shape model settings of every stage config, 7B and tiny alike.
TRAINING_MODEL = dict(param_dtype="float32", dtype="bfloat16", remat_policy="full", attention_impl="xla")


def stage_config(stage: str, arg: str | None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown config argument {arg!r}; use ':tiny' or nothing")
  number = int(stage[-1])
  if arg == "tiny":
    # Built-in synthetic packed rows with the stage's task mix (no files needed).
    from configs import tiny
    cfg = add_training_sections(tiny.get_config(), stage=stage, learning_rate=LEARNING_RATES[stage] * 30,
                                mixture=data_stages.task_mixture(number), steps=40, global_rows=8, seq_len=64,
                                warmup_steps=4)
    cfg.data.min_len, cfg.data.max_len = 4, 12
    cfg.data.feature_dim = sensevoice_tiny.get_config().encoder.output_size
    cfg.data.online = online_tokenizers(tiny=True)
    cfg.checkpoint.save_every, cfg.metrics.log_every = 10, 5
    cfg.model.update(TRAINING_MODEL)
    return with_projector(cfg)
  from configs import omni_7b
  cfg = add_training_sections(omni_7b.get_config(), stage=stage, learning_rate=LEARNING_RATES[stage],
                              mixture=data_stages.task_mixture(number), steps=24_000, global_rows=128,
                              seq_len=3072, warmup_steps=720)
  cfg.data = data_stages.data_config(number, DATA_ROOT, seq_len=cfg.train.seq_len,
                                     feature_dim=sensevoice.encoder_config().output_size)
  cfg.data.online = online_tokenizers(tiny=False)
  cfg.model.update(TRAINING_MODEL)
  return with_projector(cfg)


def online_tokenizers(tiny: bool):
  """data.online with our media-tokenizer configs (the tiny ones for ':tiny'), for sources of kind 'manifest' /
  'tfds': --config.data.sources.<name>.kind=manifest --config.data.online.text_tokenizer=<tokenizer.json>."""
  here = os.path.dirname(os.path.abspath(__file__))
  names = (("magvit.py:tiny", "whisper_vq_tiny.py", "sensevoice_tiny.py") if tiny else
           ("magvit.py", "whisper_vq.py", "sensevoice.py"))
  return data_stages.online_config(**{f"{kind}_config": os.path.join(here, name)
                                      for kind, name in zip(("magvit", "whisper_vq", "sensevoice"), names)})


def with_projector(cfg):
  """Adds the speech-input projector: data.feature_dim -> the backbone width, in the backbone's dtypes."""
  cfg.model.audio_projector = sensevoice.projector_config(
      input_size=cfg.data.feature_dim, hidden_size=cfg.model.hidden_size, dtype=cfg.model.dtype,
      param_dtype=cfg.model.param_dtype)
  return cfg
