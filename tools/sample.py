"""Sample with a task preset: prompt token ids in, text ids / image codes / speech codes out (JSON).

Today the model is randomly initialised from --config (no checkpoint loader yet); prompts are token ids
(the ChatML prompt builder is not wired yet).

  python tools/sample.py --task t2i --prompt_ids 12,40,7,99 --config.model.num_layers=2
  python tools/sample.py --task vqa --prompt_ids "5,6,7;8,9" --steps 16 --out /tmp/vqa.json
  python tools/sample.py --task t2i --prompt_ids 1,2,3 --threshold 0.9 --block_size 32 --kv_cache
"""
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config (vocab, model).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Converted checkpoint to load (not wired yet).")
_TASK = flags.DEFINE_string("task", "t2i", "Task preset (omnidiff_jax.sampling.presets.PRESETS).")
_PROMPT_IDS = flags.DEFINE_string(
    "prompt_ids", None, "Prompt token ids: comma-separated, prompts separated by ';' (left padded into a batch).")
_UNCOND_IDS = flags.DEFINE_string("uncond_ids", None, "Unconditional prompt ids for CFG (tasks with cfg_scale).")
_TEXT_LEN = flags.DEFINE_integer("text_len", None, "Text tokens to speak (task tts_eval).")
_REGION = flags.DEFINE_integer("region_len", None, "Override the generation-region length.")
_STEPS = flags.DEFINE_integer("steps", None, "Override the number of denoising steps.")
_ALG = flags.DEFINE_string("alg", None, "Override the algorithm (origin, maskgit_plus, topk_margin, entropy, "
                           "entropy-penalty).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Override the temperature.")
_BLOCK = flags.DEFINE_integer("block_size", None, "Semi-autoregressive block size.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Confidence-threshold parallel decoding (e.g. 0.9).")
_KV_CACHE = flags.DEFINE_bool("kv_cache", False, "Approximate block KV cache (needs --block_size).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and model init seed without a checkpoint).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here (default: print).")


def _parse_ids(text: str, flag: str) -> list[list[int]]:
  try:
    prompts = [[int(tok) for tok in part.split(",") if tok.strip()] for part in text.split(";")]
  except ValueError as err:
    raise app.UsageError(f"--{flag} must be comma-separated integers, prompts separated by ';': {err}")
  if not prompts or any(not p for p in prompts):
    raise app.UsageError(f"--{flag} has an empty prompt: {text!r}")
  return prompts


def load_model(cfg, checkpoint: str | None, seed: int):
  """The model to sample from: the checkpoint when given, else a random init of cfg.model."""
  if checkpoint is not None:
    # To wire once the checkpoints issue lands: `model, cfg = omnidiff_jax.checkpoints.load(checkpoint)`.
    raise app.UsageError("--checkpoint is not supported yet: checkpoint loading (omnidiff_jax.checkpoints.load) "
                         "is not in this tree; run without it for a random model from --config")
  from omnidiff_jax import sharding
  return sharding.create_model(cfg.model, seed=seed)


def main(argv):
  del argv
  import numpy as np

  from omnidiff_jax.sampling import PRESETS, generate_task, split_outputs
  from omnidiff_jax.vocab import VocabLayout

  if _PROMPT_IDS.value is None:
    raise app.UsageError("give --prompt_ids (comma-separated token ids; ';' between prompts)")
  cfg = _CONFIG.value
  vocab = VocabLayout.from_config(cfg.vocab)
  prompts = _parse_ids(_PROMPT_IDS.value, "prompt_ids")
  uncond = _parse_ids(_UNCOND_IDS.value, "uncond_ids") if _UNCOND_IDS.value else None
  for ids in prompts + (uncond or []):
    bad = [i for i in ids if not 0 <= i < vocab.size]
    if bad:
      raise app.UsageError(f"token ids {bad} are outside the vocabulary [0, {vocab.size}) of --config")
  overrides = {name: flag.value for name, flag in [
      ("region_len", _REGION), ("steps", _STEPS), ("alg", _ALG), ("temperature", _TEMPERATURE),
      ("block_size", _BLOCK), ("threshold", _THRESHOLD)] if flag.value is not None}
  if _KV_CACHE.value:
    overrides["kv_cache"] = True
  model = load_model(cfg, _CHECKPOINT.value, _SEED.value)
  try:
    start = time.perf_counter()
    result, sampler_cfg = generate_task(model, vocab, _TASK.value, prompt_ids=prompts, text_len=_TEXT_LEN.value,
                                        uncond_ids=uncond, seed=_SEED.value, **overrides)
    tokens = np.asarray(result.tokens)
    seconds = time.perf_counter() - start
  except ValueError as err:
    raise app.UsageError(str(err))
  print(f"task {_TASK.value}: {tokens.shape[0]} x {tokens.shape[1]} tokens in {seconds:.2f} s (incl. compile), "
        f"{int(result.steps)} steps, {int(result.full_forwards)} full + {int(result.cached_forwards)} cached "
        f"forwards; {sampler_cfg}", file=sys.stderr)
  modalities = PRESETS[_TASK.value].output.split("+")
  rows = [{"tokens": row.tolist(), **{k: v.tolist() for k, v in split_outputs(row, vocab).items() if k in modalities}}
          for row in tokens]
  text = json.dumps({"task": _TASK.value, "results": rows})
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
    print(f"wrote {_OUT.value}", file=sys.stderr)
  else:
    print(text)


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  app.run(main)
