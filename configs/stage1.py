"""Curriculum stage 1 (see configs/stages.py).

  python tools/train.py --config configs/stage1.py --workdir /ckpt/omni        # 7B
  python tools/train.py --config configs/stage1.py:tiny --workdir /tmp/tiny    # tiny, CPU
"""
from configs.stages import stage_config


def get_config(arg=None):
  return stage_config("stage1", arg)
