"""Forward throughput: our jitted JAX forward vs transformers' Qwen2 forward (PyTorch eager, bidirectional
mask), same config, same random weights, same CPU. Prints tokens/s for both and the ratio.

  python bench/bench_forward.py --config configs/tiny.py
  python bench/bench_forward.py --config configs/medium.py --batch 4 --seq 256
"""
import os
import platform
import sys

from absl import app, flags
from ml_collections import config_flags

from timing import LoadGuard, mean_seconds

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config.")
_BATCH = flags.DEFINE_integer("batch", 8, "Rows per forward.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per row.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed forwards per framework.")


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from flax import nnx

  import torch_reference
  from omnidiff_jax import flops, sharding
  from omnidiff_jax.models.dream import params as hf_names

  cfg = _CONFIG.value.model
  b, l = _BATCH.value, _SEQ.value
  torch.set_num_threads(os.cpu_count())
  ref = torch_reference.random_qwen2(cfg)
  ours = sharding.create_model(cfg)
  hf_names.load_backbone(ours, torch_reference.state_dict_numpy(ref).__getitem__)
  ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (b, l), dtype=np.int32)

  jax_ids = jnp.asarray(ids)
  forward = nnx.jit(lambda m, x: m(x))
  t_jax = mean_seconds(lambda: forward(ours, jax_ids).block_until_ready(), _ITERS.value)
  t_torch = mean_seconds(lambda: torch_reference.bidirectional_logits(ref, ids), _ITERS.value)
  fpt = flops.flops_per_token(cfg, l, training=False)
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"torch {torch.__version__}")
  print(f"config: hidden {cfg.hidden_size}, layers {cfg.num_layers}, vocab {cfg.vocab_size}; batch {b} x seq {l}; "
        f"{fpt / 1e6:.1f} MFLOP/token (forward)")
  for name, t in (("jax (ours)", t_jax), ("torch (transformers)", t_torch)):
    print(f"{name:>22}: {t * 1e3:8.1f} ms/forward, {b * l / t:10,.0f} tokens/s, {b * l * fpt / t / 1e9:6.1f} GFLOP/s")
  print(f"ratio (jax tokens/s / torch tokens/s): {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
  with LoadGuard():
    app.run(main)
