"""Conversion benchmark: peak host RSS and MB/s of hf-to-orbax and orbax-to-hf on a synthetic checkpoint.

Writes a random Qwen2-shaped bf16 HF checkpoint (default about 2.2 GB: vocab 152,064, hidden 2048, 8 layers,
MLP 8192, 1 GB shards), then times each conversion in a fresh subprocess and reports its peak RSS
(VmHWM) against the streaming bound 2 x largest tensor + 1 GB. With --naive it also runs the
load-everything reference in the same run (safetensors load_file of every shard, stack, one Orbax save),
which is what converters that hold a full replica do, and prints the ratios.

  python bench/bench_convert.py --workdir /tmp/bench_convert --naive
Not part of the test suite (it writes about 3 x the checkpoint size to --workdir).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
from timing import LoadGuard

ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_checkpoint(directory: pathlib.Path, hidden: int, layers: int, mlp: int, vocab: int, heads: int,
                    kv_heads: int, shard_bytes: int) -> int:
  """Random bf16 Qwen2 checkpoint written shard by shard; returns the total tensor bytes."""
  import ml_dtypes
  from safetensors.numpy import save_file
  sys.path.insert(0, str(ROOT))
  from omnidiff_jax.checkpoints.safetensors_io import INDEX_FILE
  head_dim = hidden // heads
  shapes = {"model.embed_tokens.weight": (vocab, hidden)}
  for i in range(layers):
    p = f"model.layers.{i}."
    q, kv = heads * head_dim, kv_heads * head_dim
    shapes.update({p + "self_attn.q_proj.weight": (q, hidden), p + "self_attn.q_proj.bias": (q,),
                   p + "self_attn.k_proj.weight": (kv, hidden), p + "self_attn.k_proj.bias": (kv,),
                   p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.v_proj.bias": (kv,),
                   p + "self_attn.o_proj.weight": (hidden, q),
                   p + "mlp.gate_proj.weight": (mlp, hidden), p + "mlp.up_proj.weight": (mlp, hidden),
                   p + "mlp.down_proj.weight": (hidden, mlp),
                   p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
  shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
  directory.mkdir(parents=True)
  rng = np.random.default_rng(0)
  weight_map, block, used, total, n = {}, {}, 0, 0, 0

  def flush():
    nonlocal block, used, n
    n += 1
    name = f"model-{n:05d}.safetensors"
    save_file(block, str(directory / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in block})
    block, used = {}, 0

  for key, shape in shapes.items():
    value = (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    if block and used + value.nbytes > shard_bytes:
      flush()
    block[key] = value
    used += value.nbytes
    total += value.nbytes
  flush()
  (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
  (directory / "config.json").write_text(json.dumps(dict(
      architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=hidden, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp, vocab_size=vocab,
      rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", torch_dtype="bfloat16")))
  return total


_CHILD = {
    "baseline": "import jax, orbax.checkpoint, omnidiff_jax.checkpoints.convert",
    "hf-to-orbax": ("from omnidiff_jax.checkpoints import convert; "
                    "convert.hf_to_orbax({src!r}, {dst!r}, progress=False)"),
    "orbax-to-hf": ("from omnidiff_jax.checkpoints import convert; "
                    "convert.orbax_to_hf({src!r}, {dst!r}, max_shard_size='1GB', progress=False)"),
    "naive": """
import glob, jax, numpy as np, orbax.checkpoint as ocp
from safetensors.numpy import load_file
from omnidiff_jax.models.dream import params as hf_names
import json
cfg = json.load(open({src!r} + '/config.json'))
tensors = {{}}
for f in sorted(glob.glob({src!r} + '/*.safetensors')):
  tensors.update(load_file(f))
tree = {{}}
for name in hf_names.backbone_names():
  node = tree
  for p in name.path[:-1]:
    node = node.setdefault(p, {{}})
  node[name.path[-1]] = hf_names.to_ours(name, tensors.__getitem__, cfg['num_hidden_layers'])
ocp.StandardCheckpointer().save({dst!r} + '/0', {{'params': tree}})
""",
}


def run_child(kind: str, src: str = "", dst: str = "") -> tuple[float, float]:
  """Runs one step in a fresh interpreter; returns (wall seconds, peak RSS in MB)."""
  # VmHWM is the peak RSS of this process image (ru_maxrss would inherit the parent's peak across exec).
  code = ("import time, sys; sys.path.insert(0, %r); t = time.perf_counter()\n" % str(ROOT) +
          _CHILD[kind].format(src=src, dst=dst) +
          "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]"
          "\nprint('RESULT', time.perf_counter() - t, int(hwm) / 1024)")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")][-1].split()
  return float(line[1]), float(line[2])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="/tmp/bench_convert")
  parser.add_argument("--hidden", type=int, default=2048)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--mlp", type=int, default=8192)
  parser.add_argument("--vocab", type=int, default=152_064)
  parser.add_argument("--naive", action="store_true", help="also run the load-everything reference")
  parser.add_argument("--keep", action="store_true", help="keep the files in --workdir")
  args = parser.parse_args()
  work = pathlib.Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  t = time.perf_counter()
  total = make_checkpoint(work / "hf", args.hidden, args.layers, args.mlp, args.vocab, heads=16, kv_heads=2,
                          shard_bytes=10**9)
  largest = args.vocab * args.hidden * 2
  stacked = args.layers * args.mlp * args.hidden * 2
  mb = total / 2**20
  print(f"synthetic checkpoint: {total / 1e9:.2f} GB bf16 in {time.perf_counter() - t:.0f} s; largest HF tensor "
        f"{largest / 2**20:.0f} MB, largest stacked parameter {stacked / 2**20:.0f} MB")
  bound = 2 * max(largest, stacked) / 2**20 + 1024
  _, base = run_child("baseline")
  rows = [("interpreter + imports", None, base)]
  rows.append(("hf-to-orbax (ours)", *run_child("hf-to-orbax", str(work / "hf"), str(work / "orbax"))))
  rows.append(("orbax-to-hf (ours)", *run_child("orbax-to-hf", str(work / "orbax"), str(work / "hf_out"))))
  if args.naive:
    rows.append(("hf-to-orbax (naive: load all, one save)", *run_child("naive", str(work / "hf"),
                                                                       str(work / "naive"))))
  print(f"bound 2 x largest tensor + 1 GB = {bound:.0f} MB")
  print(f"{'step':<42} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12}")
  for name, wall, rss in rows:
    speed = f"{mb / wall:8.1f}" if wall else f"{'':>8}"
    print(f"{name:<42} {wall or 0:8.1f} {speed} {rss:12.0f}")
  if args.naive:
    ours, naive = rows[1], rows[-1]
    print(f"ratio ours / naive: time {ours[1] / naive[1]:.2f}x, peak RSS {ours[2] / naive[2]:.2f}x")
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  with LoadGuard():
    main()
