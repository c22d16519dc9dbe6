"""Eval throughput: the batched, length-bucketed generation of eval.generate (what tools/eval.py runs) vs a
batch-1 loop of our own sampler over the same prompts (upstream's eval scripts run batch 1), same model, same
CPU. Prompts are random ids of random lengths with a preset's region rule (default 'mme': 8 tokens / 8 steps;
'asr_eval': int(0.2 x prompt length), steps half); both paths are warmed up first (every shape compiled), then
timed. Prints samples/s of each and their ratio, under timing.LoadGuard, and how often the two give identical
tokens, split by cause (untimed: a third, batch-1 loop with each prompt left-padded to its bucket's length): the
batch shape (bucketed vs padded batch-1) and the padding (padded vs unpadded batch-1), both through float rounding
at near-ties (omnidiff_jax/eval/generate.py).

  python bench/bench_eval.py --config configs/tiny.py
  python bench/bench_eval.py --config configs/medium.py --preset asr_eval --num_prompts 64 --batch 16
"""
import os
import time

from absl import app, flags
from ml_collections import config_flags
from timing import LoadGuard  # bench/ is the script's directory, first on sys.path

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config.")
_PRESET = flags.DEFINE_string("preset", "mme", "Sampling preset whose region / steps rules the prompts get.")
_NUM = flags.DEFINE_integer("num_prompts", 32, "Prompts.")
_MIN_LEN = flags.DEFINE_integer("min_len", 20, "Shortest prompt.")
_MAX_LEN = flags.DEFINE_integer("max_len", 120, "Longest prompt.")
_BATCH = flags.DEFINE_integer("batch", 8, "Rows per batch of the bucketed path.")
_BUCKET = flags.DEFINE_integer("prompt_bucket", 64, "Prompt-length bucket of the bucketed path.")


def main(argv):
  del argv
  import jax
  import ml_collections
  import numpy as np

  from omnidiff_jax import sharding
  from omnidiff_jax.eval import generate as gen
  from omnidiff_jax.sampling import api, presets
  from omnidiff_jax.vocab import VocabLayout

  cfg = _CONFIG.value
  vocab = VocabLayout.from_config(cfg.vocab)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  model = sharding.create_model(cfg.model, mesh, seed=0)
  rng = np.random.default_rng(0)
  requests = []
  for number in range(_NUM.value):
    ids = rng.integers(0, vocab.text_size - 30, rng.integers(_MIN_LEN.value, _MAX_LEN.value + 1)).astype(np.int32)
    sampler_cfg, region_len = presets.task_config(_PRESET.value, len(ids), text_len=len(ids) // 4)
    requests.append(gen.Request(ids=ids, cfg=sampler_cfg, region_len=region_len, seed=gen.sample_seed(0, str(number))))

  def bucketed():
    tokens, _, stats = gen.generate(model, vocab, mesh, requests, batch_size=_BATCH.value,
                                    prompt_bucket=_BUCKET.value)
    return tokens, stats

  def batch_one(padded=False):
    out = []
    with sharding.use_mesh(mesh):
      for r in requests:
        ids, mask = api.left_pad([r.ids], vocab.pad_id)
        pad = gen.bucket_length(len(r.ids), _BUCKET.value) - len(r.ids) if padded else 0
        ids, mask = np.pad(ids, ((0, 0), (pad, 0)), constant_values=vocab.pad_id), np.pad(mask, ((0, 0), (pad, 0)))
        out.append(np.asarray(api.generate(model, r.cfg, vocab, prompt_ids=ids, prompt_mask=mask,
                                           region_len=r.region_len, seed=r.seed).tokens)[0])
    return out

  _, warm_stats = bucketed()  # compiles every bucket
  batch_one()  # compiles every (prompt length, region length) shape
  start = time.perf_counter()
  ours, stats = bucketed()
  bucketed_s = time.perf_counter() - start
  start = time.perf_counter()
  loop = batch_one()
  loop_s = time.perf_counter() - start
  padded = batch_one(padded=True)
  same = lambda xs, ys: np.mean([np.array_equal(x, y) for x, y in zip(xs, ys)])
  print(f"{_NUM.value} prompts of {_MIN_LEN.value}-{_MAX_LEN.value} tokens, preset {_PRESET.value}, "
        f"{cfg.model.num_layers} layers x {cfg.model.hidden_size}")
  print(f"bucketed (batch {_BATCH.value}, prompt bucket {_BUCKET.value}, {warm_stats.buckets} compiled buckets, "
        f"{stats.batches} batches): {bucketed_s:.2f} s, {_NUM.value / bucketed_s:.2f} samples/s")
  print(f"batch-1 loop: {loop_s:.2f} s, {_NUM.value / loop_s:.2f} samples/s")
  print(f"ratio: {loop_s / bucketed_s:.2f}x")
  print(f"identical tokens: bucketed vs batch-1 loop {same(ours, loop):.0%} of the samples; bucketed vs batch-1 "
        f"padded to the bucket {same(ours, padded):.0%} (batch shape); batch-1 padded vs unpadded "
        f"{same(padded, loop):.0%} (padding)")


if __name__ == "__main__":
  with LoadGuard():
    app.run(main)
