"""COCO text-to-image through the eval path on the tiny random model: region -> MAGVIT-v2 PNG -> CLIP-T / CLIP-I
with a tiny random transformers CLIP."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import eval_fakes
import tiny_tokenizer
from configs.eval.common import base_config
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.eval import runner
from omnidiff_jax.eval.evaluators import Context
from omnidiff_jax.vocab import VocabLayout


@pytest.mark.filterwarnings("ignore:no MAGVIT-v2 weights")
def test_t2i_writes_pngs_and_clip_scores(tmp_path):
  images = tmp_path / "val2014"
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), np.uint8)).save(images / f"COCO_val2014_{i:012d}.jpg")
  annotations = tmp_path / "captions_val2014.json"
  annotations.write_text(json.dumps(dict(
      images=[dict(id=i, file_name=f"COCO_val2014_{i:012d}.jpg") for i in range(2)],
      annotations=[dict(id=7, image_id=0, caption="A red bus on a street."),
                   dict(id=8, image_id=1, caption="A dog near the river.")])))
  clip_dir = tmp_path / "clip"
  clip_dir.mkdir()
  eval_fakes.tiny_clip(clip_dir)
  backbone = cfglib.load_config_file("configs/eval/tiny_backbone.py")
  vocab = VocabLayout.from_config(backbone.vocab)
  cfg = base_config()
  cfg.batch_size, cfg.shard_size = 2, 8
  cfg.networks.magvit_config, cfg.networks.clip_path = "configs/magvit.py:tiny", str(clip_dir)
  cfg.settings = [dict(name="short", region_len=16, steps=4)]
  cfg.benchmarks.t2i = ml_collections.ConfigDict(dict(kind="coco_t2i", annotations=str(annotations),
                                                      images=str(images), limit=0))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  ctx = Context(sharding.create_model(backbone.model, mesh, seed=0), vocab, tiny_tokenizer.build(vocab), cfg.networks)
  (row,) = runner.sweep(cfg, ctx, mesh, str(tmp_path / "run"))
  records = [json.loads(line) for line in (tmp_path / "run" / "t2i" / "short" / "shard_00000.jsonl").open()]
  assert [r["id"] for r in records] == ["7", "8"] and not any(r["failed"] for r in records)
  captions = {"7": "A red bus on a street.", "8": "A dog near the river."}
  for r, real in zip(records, sorted(images.iterdir())):
    png = Image.open(r["files"]["png"]).convert("RGB")
    assert png.size == (64, 64)  # 256 codes = 16 x 16 through the tiny MAGVIT-v2 (f = 4)
    # float32 CPU, the same CLIP on the same image: measured difference 0; bound 1e-6.
    assert r["metric"]["clip_t"] == pytest.approx(float(ctx.clip.clip_t([captions[r["id"]]], [png])[0]), abs=1e-6)
    want_i = ctx.clip.clip_i([png], [Image.open(real).convert("RGB")])[0]
    assert r["metric"]["clip_i"] == pytest.approx(float(want_i), abs=1e-6)
  assert row["samples"] == 2 and row["failures"] == 0 and row["metric"] == "clip_t"
  assert row["value"] == pytest.approx(np.mean([r["metric"]["clip_t"] for r in records]))
  assert row["metrics"]["clip_i"] == pytest.approx(np.mean([r["metric"]["clip_i"] for r in records]))
