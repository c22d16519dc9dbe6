"""TPU v5e-16 (16 chips, 15.75 GiB usable HBM each): FSDP over the 16 chips.

  python tools/aot_compile.py --config configs/tpu/v5e_16.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v5e:4x4", mesh=(1, 16, 1), rows_per_micro_batch=1,
                         remat="full", attention="splash")
