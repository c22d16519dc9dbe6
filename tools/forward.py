"""Main job until the demo lands: build a model on a device mesh, run a jitted forward, report.

Prints the parameter count, the sharding table and forward tokens/s on built-in random token data.

  python tools/forward.py                                   # tiny model, 8 fake CPU devices, (2,2,2) mesh
  python tools/forward.py --config configs/tiny.py --config.mesh.data=1 --config.mesh.tensor=4
  python tools/forward.py --config configs/omni_7b.py --cpu_devices=0   # real devices (GPU/TPU)
"""
import os
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model/mesh/run config.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 8, "Fake this many CPU devices (XLA host platform); 0 uses the real devices.")
_MESH = flags.DEFINE_string("mesh", "2,2,2", "data,fsdp,tensor sizes overriding config.mesh ('' keeps config).")


def main(argv):
  del argv
  if _CPU_DEVICES.value:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(_CPU_DEVICES.value)
  import jax  # imported after XLA_FLAGS is final
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from tqdm import tqdm

  from omnidiff_jax import flops, sharding

  cfg = _CONFIG.value
  if _MESH.value:
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = (int(x) for x in _MESH.value.split(","))
  mesh = sharding.make_mesh(cfg.mesh)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; mesh {dict(mesh.shape)}")
  model = sharding.create_model(cfg.model, mesh, seed=cfg.run.seed)
  print(f"parameters: {sharding.param_count(model):,}")
  print(sharding.sharding_table(model))

  b, l = cfg.run.batch_size, cfg.run.seq_len
  ids = np.random.default_rng(cfg.run.seed).integers(0, cfg.vocab.text_size, (b, l), dtype=np.int32)
  with sharding.use_mesh(mesh):
    ids = jax.device_put(jnp.asarray(ids), jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp"))))
    forward = nnx.jit(lambda m, x: m(x))
    for _ in tqdm(range(cfg.run.warmup_steps), desc="compile+warmup"):
      forward(model, ids).block_until_ready()
    start = time.perf_counter()
    for _ in tqdm(range(cfg.run.timed_steps), desc="timed forwards"):
      logits = forward(model, ids)
    logits.block_until_ready()
    dt = (time.perf_counter() - start) / cfg.run.timed_steps
  tps = b * l / dt
  tflops = tps * flops.flops_per_token(cfg.model, l, training=False) / 1e12
  print(f"logits {logits.shape} {logits.dtype}, finite: {bool(jnp.isfinite(logits).all())}")
  print(f"forward: {dt * 1e3:.1f} ms/step, {tps:,.0f} tokens/s, {tflops:.3f} TFLOP/s (model FLOPs, full attention)")


if __name__ == "__main__":
  app.run(main)
