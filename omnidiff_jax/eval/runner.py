"""The eval sweep: benchmarks x sampler settings x shards of samples, resumable, results on process 0.

  for each benchmark (an evaluator), each setting of the grid, each shard of `shard_size` samples (a cell):
    skip the cell if <workdir>/<benchmark>/<setting>/shard_<k>.done.json exists (resume), else
    prompts of the shard (the preset's, sampling.inputs.build_prompts) -> one Request per sample with its own
    SamplerConfig and region length (presets.task_config + the setting) -> generate.generate (batched,
    length-bucketed, sharded over the mesh's data axis and hosts) -> the evaluator's prepare() on every process
    (e.g. LibriTTS's transcription by our own model) -> on process 0: decode + metric inputs per
    sample -> shard_<k>.jsonl, then the .done.json marker (written last, so a killed cell is redone).
  then the table (report.write_table) and plots from all finished cells.

A sample whose prompt cannot be built or whose output cannot be decoded is recorded with its error and scored
by the evaluator's failed() (e.g. an empty hypothesis), never dropped.

Settings: a list of dicts of SamplerConfig fields (steps, alg, temperature, top_p, repetition_penalty,
position_penalty, cfg_scale, threshold, block_size, kv_cache, ...), plus 'steps_fraction' (steps =
max(int(fraction * region length), 1): Table 3's 0.5L / 0.25L / 0.125L), 'region_len' and an optional 'name'.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from omnidiff_jax.eval import generate as gen
from omnidiff_jax.eval import report
from omnidiff_jax.eval.evaluators import KINDS, Context, Evaluator
from omnidiff_jax.eval.readers import Sample
from omnidiff_jax.sampling import presets

log = logging.getLogger(__name__)
SETTING_KEYS = {f.name for f in dataclasses.fields(presets.SamplerConfig)} | {"steps_fraction", "region_len"}


def setting_name(setting: dict) -> str:
  """A setting's name: its 'name', else its fields as k=v joined by ',' ('default' when empty)."""
  if setting.get("name"):
    return str(setting["name"])
  fields = [f"{k}={setting[k]}" for k in sorted(setting) if k != "name"]
  return ",".join(fields) or "default"


def check_settings(settings: Sequence[dict]) -> list[dict]:
  """Plain dicts of the grid, each field checked; raises ValueError naming an unknown field or a repeated name."""
  out = [dict(s) for s in settings] or [{}]
  for setting in out:
    unknown = sorted(set(setting) - SETTING_KEYS - {"name"})
    if unknown:
      raise ValueError(f"setting {setting}: unknown field(s) {unknown}; use SamplerConfig fields, steps_fraction, "
                       "region_len or name")
  names = [setting_name(s) for s in out]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f"settings {repeated} appear twice in the grid")
  return out


@dataclasses.dataclass(frozen=True)
class Cell:
  benchmark: str
  setting: str
  shard: int

  def path(self, workdir: str, suffix: str) -> str:
    return os.path.join(workdir, self.benchmark, self.setting, f"shard_{self.shard:05d}{suffix}")


def _cell_done(cell: Cell, workdir: str) -> bool:
  """Whether the cell is finished, as process 0 sees it (broadcast, so every host skips the same cells)."""
  done = np.array(os.path.exists(cell.path(workdir, ".done.json")), np.int32)
  if jax.process_count() > 1:
    done = multihost_utils.broadcast_one_to_all(done)
  return bool(done)


def run_cell(cell: Cell, evaluator: Evaluator, ctx: Context, mesh, samples: Sequence[Sample], setting: dict,
             run_cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Generates, decodes and records one cell; returns its summary (also written to the .done.json marker)."""
  began = time.perf_counter()
  primary = jax.process_index() == 0
  bar = tqdm(total=len(samples), desc=f"{cell.benchmark}/{cell.setting}/shard {cell.shard}", leave=False,
             disable=not primary, dynamic_ncols=True)
  requests, errors, filled, stats = gen.generate_samples(evaluator, ctx, mesh, samples, setting, run_cfg, bar)
  bar.close()
  evaluator.prepare(samples, {index: tokens for index, (tokens, _) in filled.items()}, mesh, run_cfg)
  summary = dict(samples=len(samples), failures=0, region_tokens=stats.region_tokens, buckets=stats.buckets,
                 batches=stats.batches, sampler_seconds=stats.sampler_seconds,
                 compile_seconds=stats.compile_seconds)
  if not primary:
    return summary
  media_dir = os.path.join(workdir, cell.benchmark, cell.setting, "media")
  records = []
  for index, sample in enumerate(samples):
    record = dict(id=sample.id, benchmark=cell.benchmark, setting=cell.setting, shard=cell.shard,
                  settings=dataclasses.asdict(requests[index].cfg) if requests[index] else None,
                  region_len=requests[index].region_len if requests[index] else None,
                  prompt_len=len(requests[index].ids) if requests[index] else None, error=errors[index])
    start = time.perf_counter()
    if index in filled:
      try:
        record["tokens"] = filled[index][0].tolist()
        record.update(evaluator.decode(sample, filled[index][0], os.path.join(media_dir, _safe(sample.id))))
      except Exception as e:  # noqa: BLE001: any decoding failure is recorded and scored, never fatal
        record["error"] = f"{type(e).__name__}: {e}"
    if record["error"] is not None:
      record.update(output="", files={}, metric=evaluator.failed(sample))
    record["failed"] = record["error"] is not None
    record["seconds"] = (filled[index][1] if index in filled else 0.0) + time.perf_counter() - start
    records.append(record)
  summary["failures"] = sum(r["failed"] for r in records)
  summary["seconds"] = time.perf_counter() - began
  lines = "".join(json.dumps(record, default=report.json_default) + "\n" for record in records)
  _write_atomic(cell.path(workdir, ".jsonl"), lines)
  _write_atomic(cell.path(workdir, ".done.json"), json.dumps(summary))
  return summary


def _safe(sample_id: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)


def _write_atomic(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks every benchmark's kind, reader fields and settings before anything is loaded; raises ValueError
  naming the config field to set."""
  for name, section in cfg.benchmarks.items():
    if section.get("kind") not in KINDS:
      raise ValueError(f"benchmarks.{name}.kind is {section.get('kind')!r}; choose one of {sorted(KINDS)}")
    groups = KINDS[section.kind].sources
    if groups and not any(all(section.get(f) for f in group) for group in groups):
      wanted = " or ".join(" + ".join(f"benchmarks.{name}.{f}" for f in group) for group in groups)
      raise ValueError(f"benchmark {name}: set {wanted} (now empty)")
    for setting in check_settings(section.get("settings") or cfg.settings):
      if setting.get("mode") == "upstream" and cfg.batch_size > 1:
        raise ValueError(f"benchmark {name}, setting {setting_name(setting)!r}: mode='upstream' ranks the reveals over "
                         "the whole batch (upstream's top-k over the flattened batch), so batch mates would change "
                         "each row's tokens; run it with --config.batch_size=1 --config.mesh.data=1, or use "
                         "mode='default'")
    KINDS[section.kind].check_section(name, section, cfg)


def make_evaluators(cfg: ml_collections.ConfigDict, ctx: Context) -> dict[str, Evaluator]:
  """{benchmark name: evaluator} of cfg.benchmarks (each a section with 'kind' and its reader fields)."""
  check_config(cfg)
  out = {}
  for name, section in cfg.benchmarks.items():
    out[name] = KINDS[section.kind](name, section, ctx)
  return out


def sweep(cfg: ml_collections.ConfigDict, ctx: Context, mesh, workdir: str) -> list[dict[str, Any]]:
  """Runs every unfinished cell, then writes the results table and plots (process 0). Returns the table rows."""
  evaluators = make_evaluators(cfg, ctx)
  for name, evaluator in evaluators.items():
    samples = evaluator.samples()
    settings = check_settings(cfg.benchmarks[name].get("settings") or cfg.settings)
    shards = [samples[i:i + cfg.shard_size] for i in range(0, len(samples), cfg.shard_size)]
    for setting in settings:
      for k, shard in enumerate(shards):
        cell = Cell(name, setting_name(setting), k)
        if _cell_done(cell, workdir):
          log.info("skipping finished cell %s", cell)
          continue
        run_cell(cell, evaluator, ctx, mesh, shard, setting, cfg, workdir)
  if jax.process_index() != 0:
    return []
  rows = report.summarize(workdir, evaluators, cfg)
  report.write_table(rows, workdir)
  report.plot(rows, workdir)
  return rows
