"""Markdown rows of bench/RESULTS.md's "7B train step per topology" table from tools/aot_compile.py --out files.

  python bench/aot_table.py /tmp/aot/*.json
"""
import json
import sys


def row(r: dict) -> str:
  mem = r["memory_gib"]
  mesh = "x".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
  micro = r["global_rows"] / r.get("grad_accum_steps", 1) / (r["mesh"]["data"] * r["mesh"]["fsdp"])
  settings = f"{r['remat']}, {r['attention']}, {micro:g} row/batch-device/micro-batch"
  if r.get("grad_accum_steps", 1) > 1:
    settings += f", accum {r['grad_accum_steps']}"
  verdict = "fits" if r["verdict"].startswith("fits") else "**OOM**"
  headroom = f"{r['hbm_headroom']:.0%}" if "hbm_headroom" in r else "-"
  mfu = f"{r['mfu_bound']:.2f} ({r['bound']}) / {r['mfu_bound_compute_only']:.2f}" if r["mfu_bound"] else "-"
  return (f"| {r['target']} | `{r['config']}` | {mesh} | {settings} | {r['compile_seconds']:.0f} | "
          f"{mem['total']:.1f} / {mem['usable_hbm']:.2f} | {verdict} ({headroom}) | {mfu} |")


def main(paths: list[str]) -> None:
  for path in paths:
    for r in json.load(open(path)):
      print(row(r))


if __name__ == "__main__":
  main(sys.argv[1:])
