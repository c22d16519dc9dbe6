"""Data pipeline throughput (packed tokens per CPU-second) vs the train step's consumption on the same machine.

Writes synthetic tokenized samples of a stage's sources to ArrayRecord shards (lengths as the real tasks:
T2I ~ 300 tokens, VQA / caption ~ 1,100 (1,024 image codes), ASR / SQA ~ 250 plus 200 feature rows of
512 floats per sample, text ~ 500), runs the Grain pipeline (mixture, tail pad, packing to --seq_len rows)
on one read thread and measures tokens per second of process CPU time (= per core). The train step side is
a jitted backbone forward + backward (cross-entropy over all tokens, block-diagonal segments) of --config at
the same row length: tokens per second of the whole machine. For scale it also prints the analytic
consumption of Omni-7B on one accelerator (omnidiff_jax.flops at an assumed MFU).

  python bench/bench_data.py --stage 1 --config configs/medium.py
  python bench/bench_data.py --stage 3 --config configs/tiny.py
"""
import os
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags
from timing import LoadGuard  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "medium.py"), "Model config (train step).")
_STAGE = flags.DEFINE_integer("stage", 1, "Curriculum stage whose mixture is benchmarked.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 3072, "Packed row length.")
_ROWS = flags.DEFINE_integer("rows", 8, "Rows per pipeline batch.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed pipeline batches.")
_SAMPLES = flags.DEFINE_integer("samples", 400, "Synthetic samples per source.")
_BINS = flags.DEFINE_integer("bins", 1, "Packing bins (1: upstream's greedy packing).")
_TRAIN_ROWS = flags.DEFINE_integer("train_rows", 1, "Rows per timed train step.")
_TRAIN_ITERS = flags.DEFINE_integer("train_iters", 3, "Timed train steps (0: pipeline only).")
_ACCEL_TFLOPS = flags.DEFINE_float("accel_tflops", 989.0, "Dense bf16 TFLOP/s of one accelerator (H100 SXM) for "
                                   "the analytic consumption of the 7B model.")
_MFU = flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for that estimate.")

# task -> (mean text tokens, media tokens, feature rows)
SHAPES = {"text": (500, 0, 0), "caption": (60, 1026, 0), "vqa": (80, 1026, 0), "t2i": (40, 258, 0),
          "asr": (40, 206, 202), "sqa": (60, 206, 202), "tts": (30, 150, 0), "svqa": (60, 1232, 202),
          "s2i": (20, 464, 202)}
FEATURE_DIM = 512


def write_sources(root, stage, samples, eos_id):
  import numpy as np

  from omnidiff_jax.data import records, stages
  from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS

  rng = np.random.default_rng(0)
  for name in stages.stage_mixture(stage):
    text, media, feats = SHAPES[name]
    out = []
    for _ in range(samples):
      n = int(rng.integers(text // 2, text * 3 // 2)) + media
      ids = rng.integers(0, eos_id, n).astype(np.int32)
      labels = np.where(np.arange(n) >= n // 3, ids, IGNORE_ID).astype(np.int32)
      out.append({"input_ids": ids, "labels": labels,
                  "task_id": np.int32(TASKS.index(name if name in TASKS else "vqa")),
                  "feature_slots": np.arange(5, 5 + feats, dtype=np.int32),
                  "audio_features": rng.standard_normal((feats, FEATURE_DIM)).astype(np.float32)})
    os.makedirs(os.path.join(root, name))
    records.write_shard(records.shard_path(os.path.join(root, name), "data", 0), out)


def pipeline_throughput(root, vocab):
  from omnidiff_jax.data import pipeline, stages

  cfg = stages.data_config(_STAGE.value, root, seq_len=_SEQ_LEN.value, feature_dim=FEATURE_DIM)
  cfg.read_threads, cfg.prefetch, cfg.num_packing_bins = 1, 16, _BINS.value
  it = iter(pipeline.build(cfg, vocab, seq_len=_SEQ_LEN.value, local_rows=_ROWS.value).dataset)
  next(it)  # warm-up: opens shards, starts threads
  wall, cpu, tokens = time.perf_counter(), time.process_time(), 0
  for _ in range(_BATCHES.value):
    batch = next(it)
    tokens += int((batch["segment_ids"] > 0).sum())
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  padded = _BATCHES.value * _ROWS.value * _SEQ_LEN.value
  return {"tokens": tokens, "fill": tokens / padded, "tokens_per_cpu_s": padded / cpu, "tokens_per_s": padded / wall}


def train_step_throughput(model_cfg):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from omnidiff_jax import sharding

  model = sharding.create_model(model_cfg)
  b, l = _TRAIN_ROWS.value, _SEQ_LEN.value
  ids = jnp.asarray(np.random.default_rng(0).integers(0, model_cfg.vocab_size, (b, l)), jnp.int32)
  segments = jnp.asarray(np.repeat(np.arange(1, 7), -(-l // 6))[:l][None].repeat(b, 0), jnp.int32)
  positions = jnp.asarray(np.arange(l) % -(-l // 6))[None].repeat(b, 0).astype(jnp.int32)

  def loss_fn(m):
    logits = m(ids, positions=positions, segment_ids=segments).astype(jnp.float32)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), ids[:, 1:, None], -1))

  step = nnx.jit(lambda m: nnx.value_and_grad(loss_fn)(m))
  jax.block_until_ready(step(model))
  start = time.perf_counter()
  for _ in range(_TRAIN_ITERS.value):
    jax.block_until_ready(step(model))
  return b * l * _TRAIN_ITERS.value / (time.perf_counter() - start)


def main(argv):
  del argv
  from omnidiff_jax.vocab import VocabLayout

  vocab = VocabLayout.from_config(_CONFIG.value.vocab)
  with tempfile.TemporaryDirectory() as root:
    write_sources(root, _STAGE.value, _SAMPLES.value, vocab.eos_id)
    data = pipeline_throughput(root, vocab)
  print(f"stage {_STAGE.value} pipeline, {_BINS.value} packing bin(s), 1 read thread, rows of {_SEQ_LEN.value}: fill {data['fill']:.1%}, "
        f"{data['tokens_per_cpu_s']:,.0f} row tokens per CPU-second (per core), {data['tokens_per_s']:,.0f} wall")
  if _TRAIN_ITERS.value:
    train = train_step_throughput(_CONFIG.value.model)
    print(f"train step (forward+backward, {_TRAIN_ROWS.value} x {_SEQ_LEN.value}, whole machine): "
          f"{train:,.0f} tokens/s")
    print(f"ratio pipeline per core / train step: {data['tokens_per_cpu_s'] / train:.1f}x")
  from configs import omni_7b
  from omnidiff_jax import flops
  per_token = flops.flops_per_token(omni_7b.get_config().model, _SEQ_LEN.value, training=True)
  accel = _MFU.value * _ACCEL_TFLOPS.value * 1e12 / per_token
  print(f"analytic: Omni-7B at {_MFU.value:.0%} MFU of {_ACCEL_TFLOPS.value:.0f} TFLOP/s consumes {accel:,.0f} "
        f"tokens/s per accelerator; one pipeline core feeds {data['tokens_per_cpu_s'] / accel:.0f} of them")


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  with LoadGuard():
    app.run(main)
