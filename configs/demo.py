"""The demo (tools/demo.py): a small Omni model trained through the three curriculum stages on the built-in
corpus, then sampled and scored on its held-out split.

  python tools/demo.py --workdir /tmp/omni_demo                 # full
  python tools/demo.py --workdir /tmp/omni_demo_quick --quick   # quick: configs/demo.py:quick
  python tools/demo.py --config.stages.stage1.steps=200         # any field below, --config.<path>=...

Sections:
  media      the corpus and media-network config (configs/demo_media.py[:arg]: pictures, speech, MAGVIT-v2,
             WhisperVQ, SenseVoice, shape/colour classifier); pictures are grid x grid codes (picture side over
             MAGVIT-v2's pixels per code) in user and reply turns alike
  text_tokenizer  vocab text ids of the BPE trained on the corpus text (>= 280: 256 bytes + 24 specials)
  model      the backbone shape; every other model setting is the 7B stage configs' (configs/stages.py
             TRAINING_MODEL: f32 parameters, bf16 compute, XLA attention, full remat) and so is the optimizer
  train      packed rows per step, row length, seed; stages.<s>: steps, learning rate, warm-up of each stage and
             source_weights (stage sources as configs/stages.py, weight 1 unless named there)
  loss       overrides of the stage configs' loss section (omnidiff_jax.training.loss)
  eval       held-out samples per task, sampler batch, decoding-mode comparison (tasks and settings)
"""
import ml_collections

from omnidiff_jax.data import stages as data_stages

STAGES = ("stage1", "stage2", "stage3")


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"unknown config argument {arg!r}; use configs/demo.py or configs/demo.py:quick")
  quick = arg == "quick"
  cfg = ml_collections.ConfigDict()
  cfg.media = "demo_media.py:quick" if quick else "demo_media.py"
  # Full: 512 text ids (232 BPE merges) spell most chat answers in one or two tokens (400: two to six).
  cfg.text_tokenizer = ml_collections.ConfigDict(dict(text_size=400 if quick else 512))
  cfg.model = ml_collections.ConfigDict(dict(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                                             head_dim=32, intermediate_size=256))
  # Quick (the CI budget: 3 min on 2 CPU cores, README "The demo"): 8 rows a step. A step of the 7B settings costs
  # about 0.45 CPU s at 8 x 224 tokens here (bf16 GEMMs are emulated on AVX2 CPUs), and compiles, media networks,
  # tokenization and eval take about 60 % of the budget, so the stages get 200 steps in all.
  cfg.train = ml_collections.ConfigDict(dict(global_rows=8 if quick else 16, seq_len=224, seed=956))
  # One noise level per packed sample (the paper's Eq. 1) instead of upstream's per-token levels: with per-token
  # levels every target is masked with probability ~1/2 independently, so a short answer is almost never fully
  # masked in training, yet sampling starts from a fully masked region.
  cfg.loss = ml_collections.ConfigDict(dict(noise="per_sequence"))
  # Stage 3 trains every task but captioning: most steps go there. Quick: stages 2 and 3 have the same steps (so
  # the same learning-rate schedule and train-step program: stage 3 reuses stage 2's compile through the
  # persistent compilation cache, tools/demo.py).
  steps = (40, 80, 80) if quick else (150, 250, 950)
  # Source weights, from stage 2-3 re-runs on one stage-1 model (README "The demo" lists them): with every source at
  # 1, T2I and S2I stayed at chance; stage 2's ASR x3 taught the backbone to read words out of speech (S2I); stage
  # 3 weights the picture outputs, SQA (0 of 32 at weight 1) and VQA (at weight 1 it scored no better than guessing
  # within the question's type) up. Every source of a stage is listed (weight 1 unless set here), so
  # --config.stages.<s>.source_weights.<source>= can override any of them.
  upweighted = {"stage2": dict(asr=3.0), "stage3": dict(t2i=3.0, s2i=5.0, sqa=3.0, vqa=2.0)}
  cfg.stages = ml_collections.ConfigDict({
      stage: dict(steps=n, learning_rate=3e-3, warmup_steps=max(n // 20, 1),
                  source_weights={source: upweighted.get(stage, {}).get(source, 1.0)
                                  for source in data_stages.STAGE_SOURCES[k + 1]})
      for k, (stage, n) in enumerate(zip(STAGES, steps))})
  cfg.eval = ml_collections.ConfigDict(dict(
      # Quick: 8 samples per task, one sampler batch (the eval's time is mostly its ~12 sampler compiles).
      samples=8 if quick else 32, batch_size=8, seed=0,
      # Decoding modes compared side by side (on top of each task's preset): exact = the preset, threshold =
      # confidence-threshold parallel decoding, kv_cache = the block-wise approximate KV cache.
      mode_tasks=["t2i", "asr"],
      modes=[dict(name="exact"), dict(name="threshold", threshold=0.9),
             dict(name="kv_cache", block_size=4, kv_cache=True)]))
  return cfg
