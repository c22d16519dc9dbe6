"""TPU v5p-64 (32 chips): FSDP over the 32 chips, 2 rows per chip per micro-batch and 2 accumulation steps: MFU
bound 0.82 (27.6 GiB per chip, 71 % headroom) against 0.78 for 4 rows without accumulation (bench/RESULTS.md,
"Cost model: async ops and on-chip memory"; the gap is inside the byte estimate's uncertainty).

  python tools/aot_compile.py --config configs/tpu/v5p_64.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v5p:2x4x4", mesh=(1, 32, 1), rows_per_micro_batch=2,
                         remat="dots", attention="splash")
