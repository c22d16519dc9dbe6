"""report.html of a demo run: metric tables with chance beside each, the decoding-mode comparison, loss curves per
stage (matplotlib PNG), sampled pictures next to their prompts, <audio> players for the speech, the media
networks' report and the budget (wall / CPU seconds and peak RSS per step). Media are linked by paths relative to
the workdir, so the folder can be moved or served as it is."""
from __future__ import annotations

import glob
import html
import json
import os
from typing import Any

import ml_collections

from omnidiff_jax import tasks
from omnidiff_jax.eval import report as eval_report

SAMPLES_SHOWN = 6
STAGES = ("stage1", "stage2", "stage3")


def _read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def loss_curves(workdir: str) -> str | None:
  """loss_curves.png: one panel per stage, total and per-task losses (the logged windows) against the step."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  present = [s for s in STAGES if os.path.isfile(os.path.join(workdir, "train", s, "metrics.jsonl"))]
  if not present:
    return None
  fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 2.8), squeeze=False)
  for ax, stage in zip(axes[0], present):
    rows = [r for r in _read_jsonl(os.path.join(workdir, "train", stage, "metrics.jsonl")) if "loss" in r]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], color="k", lw=1.5, label="loss")
    for key in sorted({k for r in rows for k in r if k.startswith("loss/")}):
      points = [(r["step"], r[key]) for r in rows if key in r]
      ax.plot(*zip(*points), lw=0.8, label=key[5:])
    ax.set(title=stage, xlabel="step", ylabel="masked-diffusion loss", yscale="log")
    ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  path = os.path.join(workdir, "loss_curves.png")
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def _fmt(value) -> str:
  return html.escape(eval_report.format_value(value, significant=3))


def _table(header: list[str], rows: list[list[Any]]) -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def beats_chance(row: dict) -> bool:
  chance = row["metrics"]["chance"]
  return row["value"] < chance if row["lower_is_better"] else row["value"] > chance


def _media(workdir: str, kind: str, path: str) -> str:
  rel = html.escape(os.path.relpath(path, workdir))
  if kind == "image":
    return f'<img src="{rel}" width="64" height="64" style="image-rendering:pixelated">'
  return f'<audio controls preload="none" src="{rel}"></audio>'


def _samples_html(workdir: str, benchmark: str, setting: str, section: ml_collections.ConfigDict) -> str:
  from omnidiff_jax.eval import readers
  by_id = {s.id: s for s in readers.manifest(section.manifest, section.get("media_root") or None)}
  cells = sorted(glob.glob(os.path.join(workdir, "eval", benchmark, setting, "shard_*.jsonl")))
  records = [r for path in cells for r in _read_jsonl(path)][:SAMPLES_SHOWN]
  rows = []
  for record in records:
    sample = by_id[record["id"]]
    given = [html.escape(sample.inputs["text"])] if "text" in sample.inputs else []
    given += [_media(workdir, "image", sample.inputs["image"])] if "image" in sample.inputs else []
    given += [_media(workdir, "audio", sample.inputs["wav"])] if "wav" in sample.inputs else []
    made = [_media(workdir, "image", record["files"]["png"])] if record.get("files", {}).get("png") else []
    made += [html.escape(record.get("output") or "")] if record.get("output") else []
    made += [f"<i>{html.escape(record['error'])}</i>"] if record.get("error") else []
    want = [_media(workdir, "image", sample.reference["image"])] if "image" in sample.reference else []
    want += [_media(workdir, "audio", sample.reference["wav"])] if "wav" in sample.reference else []
    want += [html.escape(sample.reference["text"])] if sample.reference.get("text") else []
    rows.append("<tr>" + "".join(f"<td>{'<br>'.join(c)}</td>" for c in (given, made, want)) + "</tr>")
  return ("<table><tr><th>input</th><th>generated</th><th>reference</th></tr>" + "".join(rows) + "</table>")


def write(workdir: str, cfg: ml_collections.ConfigDict, timings: dict[str, dict]) -> str:
  """Writes <workdir>/report.html from the finished steps; returns its path."""
  with open(os.path.join(workdir, "steps", "eval.json")) as f:
    evaluated = json.load(f)
  rows, ev = evaluated["rows"], ml_collections.ConfigDict(evaluated["config"])
  first = {}
  for row in rows:
    first.setdefault(row["benchmark"], row)
  parts = [f"<h1>omnidiff_jax demo</h1><p>workdir <code>{html.escape(os.path.abspath(workdir))}</code>; "
           f"backbone {html.escape(json.dumps(cfg.model.to_dict()))}; steps per stage "
           f"{', '.join(str(cfg.stages[s].steps) for s in STAGES)} of {cfg.train.global_rows} rows x "
           f"{cfg.train.seq_len} tokens.</p>"]
  parts.append("<h2>Held-out metrics per task</h2><p>chance: the score of the best constant output (the one "
               "reference answer that scores best when given for every sample).</p>")
  parts.append(_table(
      ["task", "metric", "value", "chance", "beats chance", "samples", "failures", "other metrics"],
      [[r["benchmark"], r["metric"] + (" (lower is better)" if r["lower_is_better"] else ""), r["value"],
        r["metrics"]["chance"], "yes" if beats_chance(r) else "NO", r["samples"], r["failures"],
        ", ".join(f"{k} {v:.3g}" for k, v in r["metrics"].items() if k not in (r["metric"], "chance"))]
       for r in first.values()]))
  parts.append("<h2>Decoding modes</h2><p>exact: the preset's fixed schedule; threshold: confidence-threshold "
               "parallel decoding; kv_cache: block-wise approximate KV cache. tokens/s: region tokens per "
               "second of sampling, compile time excluded.</p>")
  parts.append(_table(["task", "mode", "metric", "value", "chance", "mean steps", "tokens/s", "compile s"],
                      [[r["benchmark"], r["setting"], r["metric"], r["value"], r["metrics"]["chance"], r["steps"],
                        r["tokens_per_s"], r["compile_s"]]
                       for r in rows if r["benchmark"] in cfg.eval.mode_tasks]))
  curves = loss_curves(workdir)
  if curves:
    parts.append(f'<h2>Training loss</h2><img src="{os.path.basename(curves)}">')
  parts.append("<h2>Samples</h2>")
  for name, row in first.items():
    spec = tasks.get(ev.benchmarks[name].preset) if ev.benchmarks[name].preset in tasks.names() else None
    title = f"{name}: {' + '.join(spec.inputs)} -> {' + '.join(spec.outputs)}" if spec else name
    parts.append(f"<h3>{html.escape(title)}</h3>" + _samples_html(workdir, name, row["setting"], ev.benchmarks[name]))
  media_report = os.path.join(workdir, "media", "media_report.json")
  if os.path.isfile(media_report):
    with open(media_report) as f:
      parts.append("<h2>Media networks</h2><pre>" + html.escape(json.dumps(json.load(f), indent=1)) + "</pre>")
  parts.append("<h2>Budget</h2>" + _table(
      ["step", "wall s", "CPU s", "peak RSS MB"],
      [[name, t.get("wall_s", float("nan")), t.get("cpu_s", float("nan")), t.get("peak_rss_mb", float("nan"))]
       for name, t in timings.items()]))
  style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}")
  path = os.path.join(workdir, "report.html")
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>omnidiff_jax demo</title><style>{style}"
            f"</style></head><body>{''.join(parts)}</body></html>\n")
  return path
