"""Shared builder of the per-topology stage configs in configs/tpu/ and configs/gpu/.

Each is a stage config (configs/stages.py; `:stage2` / `:stage3` select the stage, default stage 1) with a
`target` section (the devices tools/aot_compile.py compiles for, omnidiff_jax.aot.targets) and the mesh,
gradient accumulation, remat policy and attention kernel chosen from ahead-of-time compiles of the 7B step
(bench/RESULTS.md, "7B train step per topology"): it fits with >= 10 % HBM headroom and has the highest
roofline MFU bound of the settings compiled. The global batch stays the recipe's 128 rows of 3072 tokens.

  python tools/aot_compile.py --config configs/tpu/v5p_8.py:stage3
  python tools/train.py --config configs/tpu/v5p_8.py --workdir gs://bucket/omni --cpu_devices=0
"""
from configs.stages import stage_config
from omnidiff_jax.aot.targets import target_config


def topology_config(arg: str | None, *, platform: str, topology: str, chip: str = "", mesh: tuple[int, int, int],
                    rows_per_micro_batch: int, remat: str, attention: str):
  """rows_per_micro_batch: rows each device of the batch axes (data x fsdp) holds per micro-batch; the
  accumulation steps follow from train.global_rows."""
  stage = arg or "stage1"
  if stage not in ("stage1", "stage2", "stage3"):
    raise ValueError(f"unknown config argument {arg!r}; use ':stage1', ':stage2' or ':stage3'")
  cfg = stage_config(stage, None)
  cfg.target = target_config(platform, topology, chip)
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh
  batch_devices = mesh[0] * mesh[1]
  if cfg.train.global_rows % (batch_devices * rows_per_micro_batch):
    raise ValueError(f"train.global_rows={cfg.train.global_rows} is not a multiple of {batch_devices} batch "
                     f"devices x {rows_per_micro_batch} rows per micro-batch")
  cfg.train.grad_accum_steps = cfg.train.global_rows // (batch_devices * rows_per_micro_batch)
  cfg.model.remat_policy, cfg.model.attention_impl = remat, attention
  return cfg
