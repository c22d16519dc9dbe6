"""Compile targets without the hardware: TPU topologies and GPU nodes as device descriptions, with each chip's
usable memory and peak rates for the roofline.

A target is a config section (`target` in configs/tpu/*.py and configs/gpu/*.py):
  platform  'tpu' or 'cuda'
  topology  TPU: '<chip>:<shape>', e.g. 'v5p:2x2x2', 'v5e:4x4', 'v6e:2x4'; GPU: 'hosts x 1 x gpus', e.g. '1x1x8'
  chip      GPU only: a key of CHIPS ('h100')

TPU device descriptions come from libtpu (`pip install -e .[tpu]`); GPU ones from jax's CUDA plugin
(`jax[cuda12]`) with JAX_PLATFORMS=cpu JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1, no GPU needed.
"""
from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip figures: usable_hbm_bytes as XLA reports it (TPU) or the allocator's default share (GPU);
  peak dense bf16 FLOP/s; HBM bandwidth in bytes/s; the memory spaces of compiled layouts (`S(n)`) that are
  on-chip, not HBM (TPU: 1, VMEM), for the byte count of omnidiff_jax.aot.hlo_cost."""
  name: str
  usable_hbm_bytes: float
  peak_flops: float
  hbm_bandwidth: float
  on_chip_memory_spaces: tuple[int, ...] = ()


# TPU usable HBM: what XLA's CompileTimeHbmOom reports as available. H100: 80 GiB (79.1 GiB device memory),
# of which JAX's allocator takes 75 % by default (XLA_PYTHON_CLIENT_MEM_FRACTION); set the fraction higher
# to use more.
CHIPS = {
    "v5e": Chip("TPU v5e", 15.75 * GIB, 197e12, 819e9, on_chip_memory_spaces=(1,)),
    "v5p": Chip("TPU v5p", 95.74 * GIB, 459e12, 2765e9, on_chip_memory_spaces=(1,)),
    "v6e": Chip("TPU v6e", 31.24 * GIB, 918e12, 1640e9, on_chip_memory_spaces=(1,)),
    "h100": Chip("NVIDIA H100 SXM 80GB", 0.75 * 84_929_347_584, 989e12, 3.35e12),
}

# GpuTargetConfig of an H100 SXM 80GB (CUDA 12.8, cuDNN 9.8), for a deviceless compile.
H100_TARGET_CONFIG = """
gpu_device_info { threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536 registers_per_block_limit: 65536 }
platform_name: "CUDA" dnn_version_info { major: 9 minor: 8 } runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
GPU_TARGET_CONFIGS = {"h100": H100_TARGET_CONFIG}


def target_config(platform: str, topology: str, chip: str = "") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(platform=platform, topology=topology, chip=chip))


def chip_of(target: ml_collections.ConfigDict) -> Chip:
  key = target.topology.split(":")[0] if target.platform == "tpu" else target.chip
  if key not in CHIPS:
    raise ValueError(f"target {target.platform} {target.topology!r} (chip {key!r}) has no entry in "
                     f"omnidiff_jax.aot.targets.CHIPS ({sorted(CHIPS)})")
  return CHIPS[key]


def devices(target: ml_collections.ConfigDict) -> np.ndarray:
  """The target's device descriptions (no hardware behind them), in topology order."""
  from jax.experimental import topologies

  if target.platform == "tpu":
    try:
      topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology)
    except Exception as e:  # libtpu missing or the topology unknown: say which and how to fix
      raise RuntimeError(f"cannot describe TPU topology {target.topology!r} ({e}); install libtpu "
                         "(pip install -e .[tpu]) and use a name like 'v5p:2x2x2', 'v5e:4x4', 'v6e:2x4'") from e
  elif target.platform == "cuda":
    if target.chip not in GPU_TARGET_CONFIGS:
      raise ValueError(f"target.chip {target.chip!r}: expected one of {sorted(GPU_TARGET_CONFIGS)}")
    topo = topologies.get_topology_desc(platform="cuda", target_config=GPU_TARGET_CONFIGS[target.chip],
                                        topology=target.topology)
  else:
    raise ValueError(f"target.platform {target.platform!r}: expected 'tpu' or 'cuda'")
  return np.array(topo.devices)
