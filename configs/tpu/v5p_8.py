"""TPU v5p-8 (4 chips, 95 GiB HBM each): FSDP over the 4 chips.

  python tools/aot_compile.py --config configs/tpu/v5p_8.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v5p:2x2x1", mesh=(1, 4, 1), rows_per_micro_batch=2,
                         remat="dots", attention="splash")
