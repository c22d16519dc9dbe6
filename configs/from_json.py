"""A config saved as JSON (ml_collections ConfigDict.to_json), for tools that take a config file spec:

  --magvit_config=configs/from_json.py:/abs/path/magvit.json

omnidiff_jax.demo.media_training saves the demo's media-network configs this way, so tools/tokenize_data.py and
data.online load exactly the networks that were trained, overrides included.
"""
import json

import ml_collections


def get_config(path=None):
  if not path:
    raise ValueError("configs/from_json.py needs a JSON file: configs/from_json.py:/path/to/config.json")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))
