"""TPU v6e-8 (8 chips, 31.24 GiB usable HBM each): FSDP over the 8 chips.

  python tools/aot_compile.py --config configs/tpu/v6e_8.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v6e:2x4", mesh=(1, 8, 1), rows_per_micro_batch=1,
                         remat="full", attention="splash")
