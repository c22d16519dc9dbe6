"""A two-setting sweep of the tiny random model over an MME-layout folder (tests, demos): 32 px images through
the tiny MAGVIT-v2, 8 fake CPU devices as 2 data x 4 fsdp.

  python tools/eval.py --config configs/eval/tiny.py --workdir /tmp/eval_tiny --cpu_devices=8 \\
      --config.tokenizer=/tmp/tiny_tokenizer.json --config.benchmarks.mme.root=/tmp/fake_mme
"""
import ml_collections

from configs.eval.common import base_config, config_path


def get_config():
  cfg = base_config()
  cfg.model_config = config_path("eval/tiny_backbone.py")
  cfg.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=-1, tensor=1))
  cfg.batch_size, cfg.shard_size, cfg.image_resolution = 4, 4, 32
  cfg.networks.magvit_config = config_path("magvit.py:tiny")
  cfg.settings = [dict(name="steps4", steps=4), dict()]
  cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root="", limit=0, paper=1216.7))
  return cfg
