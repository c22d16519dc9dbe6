"""TPU v5p-64 (32 chips): FSDP over the 32 chips.

  python tools/aot_compile.py --config configs/tpu/v5p_64.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v5p:2x4x4", mesh=(1, 32, 1), rows_per_micro_batch=4,
                         remat="dots", attention="splash")
