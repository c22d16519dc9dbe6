"""Curriculum stage 3 (see configs/stages.py).

  python tools/train.py --config configs/stage3.py --workdir /ckpt/omni        # 7B
  python tools/train.py --config configs/stage3.py:tiny --workdir /tmp/tiny    # tiny, CPU
"""
from configs.stages import stage_config


def get_config(arg=None):
  return stage_config("stage3", arg)
