"""Sampler benchmark: our jitted loop vs the eager PyTorch reference of upstream's loop, same weights, same CPU.

T2I-shaped by default (prompt 40, region 260, steps 260, entropy-penalty, top-p 0.9, repetition 1.2, position
penalty 2.0). Also times the faster modes (confidence threshold, block KV cache) and reports their model calls
and their token agreement with full decoding.

  python bench/bench_sampler.py --config configs/tiny.py
  python bench/bench_sampler.py --config configs/medium.py
  python bench/bench_sampler.py --config configs/medium.py --batch 8 --modes kv_cache --noreference
"""
import dataclasses
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags
from timing import LoadGuard  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config.")
_PROMPT = flags.DEFINE_integer("prompt_len", 40, "Prompt tokens.")
_REGION = flags.DEFINE_integer("region_len", 260, "Generation region (canvas) length.")
_STEPS = flags.DEFINE_integer("steps", 260, "Denoising steps.")
_BLOCK = flags.DEFINE_integer("block_size", 32, "Block size of the fast modes.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.9, "Confidence threshold of the parallel-decoding mode.")
_SCALE = flags.DEFINE_float("weight_scale", 6.0, "Scale of the random weight matrices (see "
                            "tests/sampler_reference.sharpen): peakier, position-dependent confidences.")
_BATCH = flags.DEFINE_integer("batch", 1, "Prompts per call of ours (B > 1: different prompts, per-row reveal counts, "
                              "i.e. mode 'default'; the reference always runs upstream's batch 1 on the first).")
_REFERENCE = flags.DEFINE_bool("reference", True, "Also time the PyTorch reference loop.")
MODE_NAMES = ("exact", "threshold", "kv_cache", "kv_cache_threshold")
_MODES = flags.DEFINE_list("modes", ",".join(MODE_NAMES), f"Which of our modes to time ({', '.join(MODE_NAMES)}); "
                           "agreement is measured against 'exact' when it runs.")


def main(argv):
  del argv
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
  import jax
  import numpy as np
  import torch

  import sampler_reference
  import torch_reference
  from omnidiff_jax import sharding
  from omnidiff_jax.models.dream import params as hf_names
  from omnidiff_jax.sampling import SamplerConfig, generate
  from omnidiff_jax.vocab import VocabLayout

  cfg = _CONFIG.value
  vocab = VocabLayout.from_config(cfg.vocab)
  ref = sampler_reference.sharpen(torch_reference.random_qwen2(cfg.model, seed=0), _SCALE.value)
  model = sharding.create_model(cfg.model, seed=0)
  hf_names.load_backbone(model, torch_reference.state_dict_numpy(ref).__getitem__)
  prompt = np.random.default_rng(0).integers(0, vocab.text_size - 30, (_BATCH.value, _PROMPT.value)).astype(np.int32)
  g = _REGION.value
  exact = SamplerConfig(steps=_STEPS.value, alg="entropy-penalty", top_p=0.9, repetition_penalty=1.2,
                        position_penalty=2.0, mode="upstream" if _BATCH.value == 1 else "default")
  modes = {
      "exact": exact,
      "threshold": dataclasses.replace(exact, threshold=_THRESHOLD.value),
      "kv_cache": dataclasses.replace(exact, block_size=_BLOCK.value, kv_cache=True),
      "kv_cache_threshold": dataclasses.replace(exact, block_size=_BLOCK.value, kv_cache=True,
                                                threshold=_THRESHOLD.value),
  }
  unknown = set(_MODES.value) - set(modes)
  if unknown:
    raise app.UsageError(f"unknown --modes {sorted(unknown)}; choose from {MODE_NAMES}")
  modes = {name: c for name, c in modes.items() if name in _MODES.value}
  print(f"{jax.devices()[0].platform}, params {sharding.param_count(model):,}, prompt {_PROMPT.value}, "
        f"region {g}, steps {_STEPS.value}, batch {_BATCH.value}")

  results, wall_seconds = {}, {}
  for name, sampler_cfg in modes.items():
    run = lambda: generate(model, sampler_cfg, vocab, prompt_ids=prompt, region_len=g)
    start = time.perf_counter()
    jax.block_until_ready(run())
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(run())
    seconds = time.perf_counter() - start
    results[name] = out
    steps = int(out.steps)
    wall_seconds[name] = seconds
    tokens_per_s = _BATCH.value * g / seconds
    print(f"ours {name:18s}: {seconds * 1e3 / steps:8.2f} ms/step, {tokens_per_s:9.1f} tokens/s, {steps} steps "
          f"({int(out.full_forwards)} full + {int(out.cached_forwards)} cached forwards), {seconds:.2f} s "
          f"(first call incl. compile {compile_s:.1f} s)")
  full = np.asarray(results["exact"].tokens) if "exact" in results else None
  for name, out in results.items():
    if full is not None:
      print(f"agreement with full decoding, {name}: {(np.asarray(out.tokens) == full).mean():.3f}")

  if _REFERENCE.value:
    torch.set_grad_enabled(False)
    settings = sampler_reference.ReferenceSettings(steps=_STEPS.value, alg="entropy-penalty", top_p=0.9,
                                                   repeat_penalty=1.2, max_position_penalty=2.0)
    embeds = ref.get_input_embeddings()(torch.as_tensor(prompt[:1], dtype=torch.long))
    start = time.perf_counter()
    want = sampler_reference.generate(ref, embeds, g, settings, mask_token_id=vocab.mask_id).numpy()
    seconds = time.perf_counter() - start
    reference_ms = seconds * 1e3 / min(_STEPS.value, g)
    print(f"reference (eager PyTorch): {reference_ms:8.2f} ms/step, {g / seconds:9.1f} tokens/s, {seconds:.2f} s")
    if _BATCH.value == 1 and full is not None:
      print(f"reference tokens == ours exact: {(want == full).mean():.3f}")
    for name, ours_seconds in wall_seconds.items():  # the same region: the tokens/s ratio
      print(f"speed-up vs reference (tokens/s), {name}: {_BATCH.value * seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  with LoadGuard():
    app.run(main)
