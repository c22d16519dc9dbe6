"""TPU v5e-256 (256 chips): 128 rows cannot spread over 256 batch devices, so tensor=2 (fsdp=128). Remat 'dots'
(saved matmul outputs): 7.5 GiB per chip (53 % headroom) and an MFU bound of 0.85 against 0.79 for full remat
(bench/RESULTS.md, "Cost model: async ops and on-chip memory").

  python tools/aot_compile.py --config configs/tpu/v5e_256.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="tpu", topology="v5e:16x16", mesh=(1, 128, 2), rows_per_micro_batch=1,
                         remat="dots", attention="splash")
