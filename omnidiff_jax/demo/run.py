"""The demo: built-in corpus -> media networks -> text BPE -> ArrayRecord shards -> stages 1, 2, 3 -> held-out eval
of every task (and decoding modes for T2I / ASR) -> report.html. tools/demo.py is its command line.

Workdir layout:
  corpus/        pictures, waves, manifests/<split>/<task>.jsonl (omnidiff_jax.demo.corpus)
  media/         MAGVIT-v2, WhisperVQ, SenseVoice, shape / colour classifier, media_report.json
  tokenizer.json the byte-level BPE trained on the corpus text, laid out like the Omni vocabulary
  tokenized/<source>/  ArrayRecord shards of the training split (tools/tokenize_data's library path)
  train/<stage>/ the real training loop's checkpoints and metrics.jsonl
  eval/          the eval runner's cells, results.json and the per-sample records
  steps/<step>.json  what each finished step returned, with its wall and CPU seconds; a re-run skips finished
                 steps (a killed stage resumes from its last checkpoint, a killed eval from its last cell)
  steps/inputs.json  what the steps were made from (demo and media configs, the demo code's hash); a re-run with
                 other inputs stops with the differences instead of reusing steps they would change
  report.html
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from typing import Callable

import ml_collections
import numpy as np

from omnidiff_jax import config as cfglib
from omnidiff_jax import tasks
from omnidiff_jax.config import load_config_file
from omnidiff_jax.eval import report as eval_report
from omnidiff_jax.vocab import VocabLayout

log = logging.getLogger(__name__)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
STAGES = ("stage1", "stage2", "stage3")
SPLIT_TRAIN, SPLIT_HELDOUT = "train", "heldout"
CLASSIFIER_LOADER = "omnidiff_jax.demo.classifier:ShapeColourClassifier.load"


class Steps:
  """Resumable steps: each step's result (a JSON dict) is stored in <workdir>/steps/<name>.json once it finishes."""

  def __init__(self, workdir: str):
    self.dir = os.path.join(workdir, "steps")
    os.makedirs(self.dir, exist_ok=True)

  def path(self, name: str) -> str:
    return os.path.join(self.dir, f"{name}.json")

  def run(self, name: str, fn: Callable[[], dict]) -> dict:
    if os.path.exists(self.path(name)):
      with open(self.path(name)) as f:
        result = json.load(f)
      log.info("step %s: finished before, skipped", name)
      return result
    log.info("step %s", name)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = fn()
    result["_timing"] = dict(wall_s=time.perf_counter() - wall, cpu_s=_cpu_seconds() - cpu,
                             peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with open(self.path(name) + ".tmp", "w") as f:
      json.dump(result, f, indent=1, default=eval_report.json_default)
    os.replace(self.path(name) + ".tmp", self.path(name))
    return result

  def check_inputs(self, inputs: dict) -> None:
    """Stores `inputs` (a JSON-able dict of what the steps are made from) on the first run; raises ValueError
    naming the changed entries when a re-run's differ, since its finished steps would be reused silently."""
    path = os.path.join(self.dir, "inputs.json")
    inputs = json.loads(json.dumps(inputs, sort_keys=True))
    if not os.path.exists(path):
      with open(path + ".tmp", "w") as f:
        json.dump(inputs, f, indent=1, sort_keys=True)
      os.replace(path + ".tmp", path)
      return
    with open(path) as f:
      before = json.load(f)
    changed = _changed_keys(before, inputs)
    if changed:
      raise ValueError(f"{os.path.dirname(self.dir)} was made from other demo inputs (changed: {', '.join(changed)})"
                       "; its finished steps would not reflect them. Give a new --workdir, or delete this one to "
                       "start over")

  def timings(self) -> dict[str, dict]:
    out = {}
    for name in sorted(os.listdir(self.dir)):
      if name.endswith(".json"):
        with open(os.path.join(self.dir, name)) as f:
          out[name[:-5]] = json.load(f).get("_timing", {})
    return out


def _changed_keys(before, after, prefix: str = "") -> list[str]:
  """Dotted paths where two JSON values differ (dicts compared key by key)."""
  if isinstance(before, dict) and isinstance(after, dict):
    return [k for key in sorted(set(before) | set(after))
            for k in _changed_keys(before.get(key), after.get(key), f"{prefix}{key}.")]
  return [] if before == after else [prefix.rstrip(".") or "(all)"]


def code_hash() -> str:
  """SHA-256 of the demo package's modules but the report (which a re-run rewrites anyway)."""
  here = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for name in sorted(os.listdir(here)):
    if name.endswith(".py") and name != "report.py":
      with open(os.path.join(here, name), "rb") as f:
        digest.update(name.encode() + f.read())
  return digest.hexdigest()


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------------------------
# Steps.

def media_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return load_config_file(os.path.join(CONFIG_DIR, cfg.media))


def manifest(corpus_dir: str, split: str, name: str) -> str:
  return os.path.join(corpus_dir, "manifests", split, f"{name}.jsonl")


def source_manifest(corpus_dir: str, split: str, source: str) -> str:
  """A data source's manifest (the corpus writes one per source: caption.jsonl holds the captioning lines)."""
  path = manifest(corpus_dir, split, source)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"the corpus has no manifest {path}; rebuild it (delete {corpus_dir} and "
                            f"{os.path.join(os.path.dirname(corpus_dir), 'steps', 'corpus.json')}, then re-run)")
  return path


def corpus_text(corpus_dir: str) -> list[str]:
  """Every message of the training manifests (placeholders removed) and every task's prompt text."""
  from omnidiff_jax import chat
  lines = []
  for name in sorted(os.listdir(os.path.join(corpus_dir, "manifests", SPLIT_TRAIN))):
    with open(os.path.join(corpus_dir, "manifests", SPLIT_TRAIN, name), encoding="utf-8") as f:
      for line in f:
        if line.strip():
          lines += [m["content"] for m in json.loads(line)["messages"]]
  for spec in tasks.specs():
    lines += [part for part in spec.chat if part]
  lines += ["system", "user", "assistant"]
  for tag in (chat.IMAGE_TAG, chat.AUDIO_TAG, "{text}", "{answer}"):
    lines = [line.replace(tag, " ") for line in lines]
  return lines


def vocab_config(cfg: ml_collections.ConfigDict, media: dict) -> ml_collections.ConfigDict:
  """The layout: the BPE's text ids, the 21 specials, WhisperVQ's and MAGVIT-v2's codebooks."""
  used = cfg.text_tokenizer.text_size + cfglib.NUM_OMNI_SPECIALS + media["num_audio_codes"] + media["num_image_codes"]
  return cfglib.vocab_config(text_size=cfg.text_tokenizer.text_size, num_specials=cfglib.NUM_OMNI_SPECIALS,
                             num_audio_codes=media["num_audio_codes"], num_image_codes=media["num_image_codes"],
                             size=used)


def image_grid(media: dict) -> int:
  """Codes per picture side: the corpus pictures' side over MAGVIT-v2's pixels per code."""
  from omnidiff_jax.demo import media_training
  return media["image_resolution"] // media_training.media_tokenizers(media).image_downsample


def all_sources() -> list[str]:
  from omnidiff_jax.data import stages
  return sorted({s for sources in stages.STAGE_SOURCES.values() for s in sources})


def tokenize(workdir: str, cfg: ml_collections.ConfigDict, media: dict) -> dict:
  """The training split of every stage source -> <workdir>/tokenized/<source>/ ArrayRecord shards, through
  tools/tokenize_data.py's library path (data.offline.tokenize with a SampleEncoder); returns per source the
  samples written and per task the longest target (labelled positions), which sets the eval region lengths."""
  from omnidiff_jax.data import offline, records
  from omnidiff_jax.data import stages as data_stages
  from omnidiff_jax.data.encode import SampleEncoder
  from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS
  from omnidiff_jax.vocab import load_tokenizer
  from omnidiff_jax.demo import media_training
  vocab = VocabLayout.from_config(vocab_config(cfg, media))
  media_tok = media_training.media_tokenizers(media)
  grid = image_grid(media)
  encoder = SampleEncoder(vocab, load_tokenizer(os.path.join(workdir, "tokenizer.json")), media_tok,
                          feature_dim=media_tok.feature_dim, image_grid={"user": grid, "assistant": grid})
  corpus_dir = os.path.join(workdir, "corpus")
  room = cfg.train.seq_len - data_stages.data_config(1).tail_pad_max  # packing appends up to this many pads
  written, longest_target, longest_sample = {}, {}, 0
  for source in all_sources():
    out_dir = os.path.join(workdir, "tokenized", source)
    items = offline.manifest_items(source_manifest(corpus_dir, SPLIT_TRAIN, source))
    written[source] = offline.tokenize(items, out_dir, encoder, on_error="error", records_per_shard=100_000,
                                       max_len=room)["written"]
    data = records.array_record_source(out_dir)
    for i in range(len(data)):
      sample = data[i]
      task = TASKS[int(sample["task_id"])]
      longest_target[task] = max(longest_target.get(task, 0), int((sample["labels"] != IGNORE_ID).sum()))
      longest_sample = max(longest_sample, len(sample["input_ids"]))
  if longest_sample > room:
    raise ValueError(f"the longest training sample has {longest_sample} tokens, more than train.seq_len="
                     f"{cfg.train.seq_len} less {cfg.train.seq_len - room} tail pads; raise --config.train.seq_len")
  return dict(written=written, longest_target=longest_target, longest_sample=longest_sample,
              vocab=vocab_config(cfg, media).to_dict(), feature_dim=media_tok.feature_dim)


def stage_config(workdir: str, cfg: ml_collections.ConfigDict, stage: str, tokenized: dict
                 ) -> ml_collections.ConfigDict:
  """configs/stages.py's stage config (7B settings) with the demo's shape, data, steps and learning rate."""
  from configs import stages as stage_configs
  from omnidiff_jax.data import stages as data_stages
  out = stage_configs.stage_config(stage, "tiny")
  out.vocab = ml_collections.ConfigDict(tokenized["vocab"])
  out.model.update(cfg.model.to_dict())
  out.model.vocab_size = out.vocab.size
  s = cfg.stages[stage]
  out.train.update(steps=s.steps, global_rows=cfg.train.global_rows, seq_len=cfg.train.seq_len, seed=cfg.train.seed)
  out.optimizer.update(learning_rate=s.learning_rate, warmup_steps=s.warmup_steps)
  out.loss.update(cfg.loss.to_dict())
  online = out.data.online
  out.data = data_stages.data_config(int(stage[-1]), os.path.join(workdir, "tokenized"), seq_len=cfg.train.seq_len,
                                     feature_dim=tokenized["feature_dim"])
  out.data.online = online
  out.data.update(read_threads=1, prefetch=2)
  # The corpus has about as many lines per source, so Table 4's sizes would starve SDVI: weight 1 unless the stage
  # says otherwise.
  weights = s.get("source_weights", {})
  unknown = sorted(set(weights) - set(out.data.sources))
  if unknown:
    raise ValueError(f"stages.{stage}.source_weights names {unknown}, not sources of {stage}; use some of "
                     f"{sorted(out.data.sources)}")
  for name, source in out.data.sources.items():
    source.weight = float(weights.get(name, 1.0))
  out.checkpoint.update(save_every=max(s.steps // 3, 1), keep=2, async_save=False)
  out.metrics.update(log_every=max(s.steps // 30, 1), tensorboard=False)
  if stage != STAGES[0]:
    out.train.init_from = os.path.join(workdir, "train", STAGES[STAGES.index(stage) - 1], "checkpoints")
  return stage_configs.with_projector(out)


def train_stage(workdir: str, cfg: ml_collections.ConfigDict, stage: str, tokenized: dict) -> dict:
  from omnidiff_jax.training import loop
  result = loop.train(stage_config(workdir, cfg, stage, tokenized), os.path.join(workdir, "train", stage))
  if result["status"] != "completed":
    raise RuntimeError(f"{stage} stopped ({result['status']}) at step {result['step']}; re-run to resume")
  return {k: float(v) if isinstance(v, (int, float, np.generic)) else v for k, v in result.items()}


def region_settings(spec: tasks.TaskSpec, longest_target: int, grid: int) -> dict:
  """A task's demo sampler setting: a region of its longest training target plus one end token (image tasks:
  the grid's codes, begin / end of image, <|im_end|>, one pad), the preset's other fields, without the
  repetition / position penalties and CFG tuned for 256-code pictures and minute-long speech, and without the
  <|begin_of_audio|> pre-fill (the short text answers come first)."""
  region = grid * grid + 4 if "image" in spec.outputs else longest_target + 1
  setting = dict(region_len=region)
  if "image" in spec.outputs or spec.name in ("svqa", "sqa"):
    setting.update(repetition_penalty=1.0, position_penalty=1.0, cfg_scale=0.0, boa_fraction=None,
                   alg="entropy")
  return setting


def eval_config(workdir: str, cfg: ml_collections.ConfigDict, media: dict, tokenized: dict
                ) -> ml_collections.ConfigDict:
  from configs.eval.common import base_config
  ev = base_config()
  ev.checkpoint = os.path.join(workdir, "train", STAGES[-1], "checkpoints")
  ev.tokenizer = os.path.join(workdir, "tokenizer.json")
  ev.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Prompts padded to 128: one sampler compile per task and mode (compiles dominate the demo's eval).
  ev.batch_size, ev.prompt_bucket, ev.shard_size, ev.seed = cfg.eval.batch_size, 128, 10_000, cfg.eval.seed
  grid = image_grid(media)
  ev.image_resolution = media["image_resolution"]
  ev.networks.update(magvit_config=media["magvit_config"], magvit=media["magvit_weights"],
                     speech_in_config=media["sensevoice_config"], sensevoice=media["sensevoice_weights"],
                     cmvn=media["cmvn_file"])
  corpus_dir = os.path.join(workdir, "corpus")
  for spec in tasks.specs():
    path = source_manifest(corpus_dir, SPLIT_HELDOUT, spec.name)
    base = region_settings(spec, tokenized["longest_target"].get(spec.name, 0), grid)
    modes = cfg.eval.modes if spec.name in cfg.eval.mode_tasks else cfg.eval.modes[:1]
    ev.benchmarks[spec.name] = ml_collections.ConfigDict(dict(
        kind="demo", manifest=path, preset=spec.presets[0].name, limit=cfg.eval.samples,
        grid=grid, classifier=media["classifier_weights"], classifier_loader=CLASSIFIER_LOADER,
        whisper_vq_config=media["whisper_vq_config"], whisper_vq=media["whisper_vq_weights"],
        settings=[dict(base, **_mode_setting(m, base["region_len"])) for m in modes]))
  return ev


def _mode_setting(mode: ml_collections.ConfigDict, region_len: int) -> dict:
  mode = dict(mode)
  if mode.get("block_size"):  # at most the region
    mode["block_size"] = min(mode["block_size"], region_len)
  return mode


def evaluate(workdir: str, cfg: ml_collections.ConfigDict, media: dict, tokenized: dict) -> dict:
  from omnidiff_jax import checkpoints, sharding
  from omnidiff_jax.demo import evaluators  # noqa: F401  registers the 'demo' kind
  from omnidiff_jax.eval import runner
  from omnidiff_jax.eval.evaluators import Context
  from omnidiff_jax.vocab import load_tokenizer
  ev = eval_config(workdir, cfg, media, tokenized)
  mesh = sharding.make_mesh(ev.mesh)
  model, model_cfg = checkpoints.load(ev.checkpoint, mesh=mesh)
  ctx = Context(model, VocabLayout.from_config(model_cfg.vocab), load_tokenizer(ev.tokenizer), ev.networks, ev.seed)
  rows = runner.sweep(ev, ctx, mesh, os.path.join(workdir, "eval"))
  return dict(rows=rows, config=ev.to_dict())


def run(workdir: str, cfg: ml_collections.ConfigDict) -> str:
  """Runs (or resumes) every step; returns the path of report.html."""
  from omnidiff_jax import text_tokenizer
  from omnidiff_jax.demo import corpus, media_training, report
  os.makedirs(workdir, exist_ok=True)
  steps = Steps(workdir)
  corpus_dir, media_dir = os.path.join(workdir, "corpus"), os.path.join(workdir, "media")
  mcfg = media_config(cfg)
  steps.check_inputs(dict(config=cfg.to_dict(), media=mcfg.to_dict(), code=code_hash()))
  steps.run("corpus", lambda: dict(corpus.build_corpus(corpus_dir, mcfg)))
  media = steps.run("media", lambda: dict(media_training.train_media_networks(corpus_dir, media_dir, mcfg)))

  def build_tokenizer():
    vocab = VocabLayout.from_config(vocab_config(cfg, media))
    text_tokenizer.build(vocab, corpus_text(corpus_dir)).save(os.path.join(workdir, "tokenizer.json"))
    return dict(path=os.path.join(workdir, "tokenizer.json"), vocab=vocab_config(cfg, media).to_dict())

  steps.run("text_tokenizer", build_tokenizer)
  tokenized = steps.run("tokenize", lambda: tokenize(workdir, cfg, media))
  for stage in STAGES:
    steps.run(stage, lambda stage=stage: train_stage(workdir, cfg, stage, tokenized))
  steps.run("eval", lambda: evaluate(workdir, cfg, media, tokenized))
  return report.write(workdir, cfg, steps.timings())
