"""The results of a sweep: one row per benchmark x setting from the finished cells' records, written as JSON,
CSV and markdown, and two plots (quality vs steps, quality vs tokens/s) as PNG. Each benchmark x setting's
records are also exported in the benchmark's own result format under <benchmark>/<setting>/export/."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

COLUMNS = ("benchmark", "setting", "metric", "value", "paper", "samples", "failures", "steps", "tokens_per_s",
           "compile_s", "sampler_s", "complete")


def paper_numbers(section: ml_collections.ConfigDict, setting: str, metric: str) -> dict[str, float]:
  """The paper's numbers for a setting, by metric key. benchmarks.<name>.paper is a number (the headline metric
  of the 'default' setting), or {setting name: number (the headline metric) or {metric key: number}}."""
  paper = section.get("paper")
  if isinstance(paper, (int, float)):
    return {metric: float(paper)} if setting == "default" else {}
  value = dict(paper).get(setting) if paper else None
  if value is None:
    return {}
  return {metric: float(value)} if isinstance(value, (int, float)) else {k: float(v) for k, v in dict(value).items()}


def summarize(workdir: str, evaluators: dict, cfg: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Rows of every benchmark x setting with finished cells: headline metric, all metrics, counts and speed."""
  rows = []
  for name, evaluator in evaluators.items():
    for setting_dir in sorted(glob.glob(os.path.join(workdir, name, "*", ""))):
      setting = os.path.basename(os.path.dirname(setting_dir))
      done = sorted(glob.glob(os.path.join(setting_dir, "shard_*.done.json")))
      if not done:
        continue
      summaries, records = [], []
      for path in done:
        with open(path) as f:
          summaries.append(json.load(f))
        with open(path[:-len(".done.json")] + ".jsonl", encoding="utf-8") as f:
          records += [json.loads(line) for line in f if line.strip()]
      metrics = evaluator.score(records)
      evaluator.export(records, os.path.join(setting_dir, "export"))
      sampler_s = sum(s["sampler_seconds"] for s in summaries)
      compile_s = sum(s["compile_seconds"] for s in summaries)
      run_s = sampler_s - compile_s
      steps = [r["settings"]["steps"] for r in records if r.get("settings")]
      total = math.ceil(len(evaluator.samples()) / cfg.shard_size)
      paper = paper_numbers(cfg.benchmarks[name], setting, evaluator.metric)
      rows.append(dict(
          benchmark=name, setting=setting, metric=evaluator.metric, value=metrics[evaluator.metric],
          lower_is_better=evaluator.lower_is_better, paper=paper.get(evaluator.metric), paper_metrics=paper,
          samples=len(records), failures=sum(r["failed"] for r in records),
          steps=float(np.mean(steps)) if steps else float("nan"),
          tokens_per_s=sum(s["region_tokens"] for s in summaries) / run_s if run_s > 0 else float("nan"),
          compile_s=compile_s, sampler_s=sampler_s, complete=len(done) == total, metrics=metrics))
  return rows


def json_default(value):
  """json.dump's default= for NumPy scalars (np.float32, np.int64, ...): their Python value; TypeError otherwise."""
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_value(value, significant: int = 4) -> str:
  """A table cell: a float to `significant` digits ('' for NaN), '' for None, anything else str()."""
  if isinstance(value, float):
    return "" if math.isnan(value) else f"{value:.{significant}g}"
  return "" if value is None else str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A markdown table: the header, its separator and a line per row, cells through format_value; ends in a newline."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict], workdir: str) -> None:
  """results.json (every metric), results.csv and results.md (the COLUMNS)."""
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(list(rows), f, indent=1, default=float)
  cells = [[row[c] for c in COLUMNS] for row in rows]
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    writer.writerows([[format_value(cell) for cell in row] for row in cells])
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown_table(COLUMNS, cells))


def plot(rows: Sequence[dict], workdir: str) -> list[str]:
  """quality_vs_steps.png and quality_vs_tokens_per_s.png: one panel per benchmark, a point per setting (the
  paper's numbers as crosses where given). Returns the paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  benchmarks = sorted({row["benchmark"] for row in rows})
  paths = []
  for x_key, label in (("steps", "mean sampler steps"), ("tokens_per_s", "region tokens / s")):
    fig, axes = plt.subplots(1, max(len(benchmarks), 1), figsize=(4 * max(len(benchmarks), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], benchmarks):
      points = sorted((row[x_key], row["value"], row["paper"], row["setting"], row["metric"])
                      for row in rows if row["benchmark"] == name)
      ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="ours")
      for x, y, _, setting, _ in points:
        ax.annotate(setting, (x, y), fontsize=6)
      paper = [(p[0], p[2]) for p in points if p[2] is not None]
      if paper:
        ax.plot(*zip(*paper), "x", color="k", label="paper")
      ax.set(title=name, xlabel=label, ylabel=points[0][4] if points else "")
      ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(workdir, f"quality_vs_{x_key}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths
