"""Markdown rows of bench/RESULTS.md's "7B train step per topology" table (train steps) and its sampler table
from tools/aot_compile.py --out files.

  python bench/aot_table.py /tmp/aot/*.json
  python bench/aot_table.py --recost /tmp/aot/v5p_8.json   # cost fields again from the saved HLO (--hlo_out
                                                           # with the --out name less .json): v5p_8.train.hlo
With --recost each file's results get their FLOPs, bytes, roofline and MFU bounds recomputed by the current
omnidiff_jax/aot/hlo_cost.py from <json name less .json>.<what>.hlo, written to <name>.recost.json.
"""
import json
import sys

from omnidiff_jax.aot import compile as aot, targets

# tools/aot_compile.py --what names, by the result's "what".
HLO_SUFFIX = {"train_step": "train", "sampler_exact": "sample_exact", "sampler_kv_cache": "sample_kv"}


def _mesh(r: dict) -> str:
  return "x".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))


def _fit(r: dict) -> str:
  verdict = "fits" if r["verdict"].startswith("fits") else "**OOM**"
  headroom = f"{r['hbm_headroom']:.0%}" if "hbm_headroom" in r else "-"
  return f"{r['memory_gib']['total']:.1f} / {r['memory_gib']['usable_hbm']:.2f} | {verdict} ({headroom})"


def row(r: dict) -> str:
  """A train-step row: target, config, mesh, settings, compile s, GiB / usable, verdict, MFU bounds."""
  micro = r["global_rows"] / r.get("grad_accum_steps", 1) / (r["mesh"]["data"] * r["mesh"]["fsdp"])
  settings = f"{r['remat']}, {r['attention']}, {micro:g} row/batch-device/micro-batch"
  if r.get("grad_accum_steps", 1) > 1:
    settings += f", accum {r['grad_accum_steps']}"
  mfu = f"{r['mfu_bound']:.2f} ({r['bound']}) / {r['mfu_bound_compute_only']:.2f}" if r["mfu_bound"] else "-"
  return (f"| {r['target']} | `{r['config']}` | {_mesh(r)} | {settings} | {r['compile_seconds']:.0f} | "
          f"{_fit(r)} | {mfu} |")


def sampler_row(r: dict) -> str:
  """A sampler row: target, mode, mesh, shape, compile s, GiB / usable, verdict, weights GiB per device and the
  ms to read them once at the chip's HBM bandwidth (the floor of a step), roofline ms per step."""
  mode = "KV cache" if r["what"] == "sampler_kv_cache" else "exact"
  shape = f"{r['batch']} x ({r['prompt_len']} + {r['region_len']}), {r['param_dtype']} weights, {r['attention']}"
  bandwidth = next(c.hbm_bandwidth for c in targets.CHIPS.values() if c.name == r["chip"])
  weights = f"{r['params_gib_per_device']:.2f} ({r['params_gib_per_device'] * targets.GIB / bandwidth * 1e3:.2f})"
  ms = (f"{r['roofline_ms']:.2f} ({r['bound']}; compute {r['compute_ms']:.2f}, memory {r['memory_ms']:.2f})"
        if r.get("compute_ms") is not None else "-")
  return (f"| {r['target']} | {mode} | {_mesh(r)} | {shape} | {r['compile_seconds']:.0f} | {_fit(r)} | "
          f"{weights} | {ms} |")


def recost_file(path: str) -> list[dict]:
  """The results of one --out file with their cost fields recomputed from the HLO saved beside it."""
  prefix = path.removesuffix(".json")
  results = []
  for r in json.load(open(path)):
    hlo_path = f"{prefix}.{HLO_SUFFIX[r['what']]}.hlo"
    try:
      with open(hlo_path) as f:
        results.append(aot.recost(r, f.read()))
    except FileNotFoundError as e:
      raise SystemExit(f"--recost {path}: no {hlo_path}; compile with tools/aot_compile.py --hlo_out={prefix}") from e
  with open(f"{prefix}.recost.json", "w") as f:
    json.dump(results, f, indent=1)
  return results


def main(args: list[str]) -> None:
  recost = args[:1] == ["--recost"]
  for path in args[recost:]:
    for r in recost_file(path) if recost else json.load(open(path)):
      print(sampler_row(r) if r["what"].startswith("sampler") else row(r))


if __name__ == "__main__":
  main(sys.argv[1:])
