"""One node of 8 NVIDIA H100 SXM 80GB: FSDP over the 8 GPUs, XLA attention (cuDNN flash attention checks
the installed cuDNN when traced, so it cannot compile without a GPU).

  python tools/aot_compile.py --config configs/gpu/h100_8.py  # stage 1; :stage2, :stage3 for the others
"""
from configs.topologies import topology_config


def get_config(arg=None):
  return topology_config(arg, platform="cuda", topology="1x1x8", chip="h100", mesh=(1, 8, 1),
                         rows_per_micro_batch=4, remat="full", attention="xla")
