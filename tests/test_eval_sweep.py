"""The eval sweep on the tiny model (random weights) over a tiny fake MME copy: table and plots, resume after a
kill, and the same per-sample outputs on 8 fake devices (2 data shards x 4 fsdp) as on one device."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import tiny_tokenizer
from configs import tiny
from configs.eval.common import base_config
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.eval import generate, runner
from omnidiff_jax.eval.evaluators import Context
from omnidiff_jax.vocab import VocabLayout

# The tiny tokenizer's 400 text ids; the tiny MAGVIT-v2 keeps the real 13-bit codebook (8192 image codes).
VOCAB = dict(text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64, num_image_codes=8192, size=8680)


@pytest.fixture(scope="module")
def mme_root(tmp_path_factory):
  """Two subtasks x two images x two questions, upstream's MME layout, 8 px images."""
  root = tmp_path_factory.mktemp("mme")
  results = root / "eval_tool" / "Your_Results"
  results.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for subtask in ("existence", "color"):
    lines = []
    for image in ("a.png", "b.png"):
      path = root / "images" / subtask / image
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(path)
      lines += [f"{image}\tIs there a red bus?\tYes\n", f"{image}\tIs the dog brown?\tNo\n"]
    (results / f"{subtask}.txt").write_text("".join(lines))
  return root


@pytest.fixture(scope="module")
def backbone_cfg():
  cfg = tiny.get_config()
  cfg.vocab = cfglib.vocab_config(**VOCAB)
  cfg.model.vocab_size = cfg.vocab.size
  return cfg


@pytest.fixture(scope="module")
def vocab_and_tokenizer(backbone_cfg):
  vocab = VocabLayout.from_config(backbone_cfg.vocab)
  return vocab, tiny_tokenizer.build(vocab)


def _eval_cfg(mme_root, settings, batch_size=4):
  cfg = base_config()
  cfg.batch_size, cfg.shard_size, cfg.prompt_bucket, cfg.image_resolution = batch_size, 4, 64, 32
  cfg.networks.magvit_config = "configs/magvit.py:tiny"
  cfg.settings = settings
  cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root=str(mme_root), paper=1216.7))
  return cfg


def _context(backbone_cfg, vocab_and_tokenizer, mesh, cfg):
  vocab, tokenizer = vocab_and_tokenizer
  model = sharding.create_model(backbone_cfg.model, mesh, seed=0)
  return Context(model, vocab, tokenizer, cfg.networks)


def _mesh(shape):
  data, fsdp, tensor = shape
  mesh_cfg = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))
  return sharding.make_mesh(mesh_cfg, jax.devices()[:data * fsdp * tensor])


def _records(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for name in sorted(files):
      if name.endswith(".jsonl"):
        with open(os.path.join(root, name)) as f:
          for line in f:
            r = json.loads(line)
            out[(r["setting"], r["id"])] = r
  return out


@pytest.mark.filterwarnings("ignore:no MAGVIT-v2 weights")
def test_two_setting_sweep_writes_table_and_plots_and_resumes(tmp_path, monkeypatch, mme_root, backbone_cfg,
                                                              vocab_and_tokenizer):
  cfg = _eval_cfg(mme_root, [dict(name="steps4", steps=4), dict()])
  ctx = _context(backbone_cfg, vocab_and_tokenizer, _mesh((1, 1, 1)), cfg)
  mesh = _mesh((1, 1, 1))
  calls = []
  real_generate = generate.generate

  def killed_after_three_cells(*args, **kwargs):
    if len(calls) == 3:
      raise KeyboardInterrupt("killed")
    calls.append(kwargs)
    return real_generate(*args, **kwargs)

  monkeypatch.setattr(generate, "generate", killed_after_three_cells)
  with pytest.raises(KeyboardInterrupt):
    runner.sweep(cfg, ctx, mesh, str(tmp_path))
  done = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.done.json"))
  assert done == ["mme/default/shard_00000.done.json", "mme/steps4/shard_00000.done.json",
                  "mme/steps4/shard_00001.done.json"]
  before = {p: p.read_bytes() for p in tmp_path.rglob("shard_*.jsonl")}
  assert not (tmp_path / "results.md").exists()

  calls.clear()
  rows = runner.sweep(cfg, ctx, mesh, str(tmp_path))
  assert len(calls) == 1  # only the unfinished cell ran
  assert all(p.read_bytes() == data for p, data in before.items())
  records = _records(tmp_path)
  assert len(records) == 16 and all(not r["failed"] for r in records.values())
  steps4 = records[("steps4", "existence/00001")]
  assert steps4["settings"]["steps"] == 4 and steps4["region_len"] == 8 and len(steps4["tokens"]) == 8
  assert records[("default", "existence/00001")]["settings"]["steps"] == 8
  assert set(steps4["metric"]) == {"subtask", "image", "question", "answer", "prediction"}
  # The table's numbers are MME's formula on the records.
  by_setting = {row["setting"]: row for row in rows}
  assert by_setting["default"]["paper"] == 1216.7 and by_setting["steps4"]["paper"] is None
  for row in rows:
    assert row["samples"] == 8 and row["failures"] == 0 and row["complete"] and row["metric"] == "perception"
    assert row["value"] == pytest.approx(row["metrics"]["existence/score"] + row["metrics"]["color/score"])
    assert row["tokens_per_s"] > 0 and row["compile_s"] > 0
  for name in ("results.json", "results.csv", "results.md", "quality_vs_steps.png", "quality_vs_tokens_per_s.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert "| mme | default | perception |" in (tmp_path / "results.md").read_text()


@pytest.mark.filterwarnings("ignore:no MAGVIT-v2 weights")
def test_eight_devices_give_the_same_outputs_as_one(tmp_path, mme_root, backbone_cfg, vocab_and_tokenizer):
  cfg = _eval_cfg(mme_root, [dict()], batch_size=4)
  outputs = {}
  for shape in ((1, 1, 1), (2, 4, 1)):
    mesh = _mesh(shape)
    workdir = tmp_path / "x".join(map(str, shape))
    runner.sweep(cfg, _context(backbone_cfg, vocab_and_tokenizer, mesh, cfg), mesh, str(workdir))
    outputs[shape] = {k: (r["tokens"], r["output"]) for k, r in _records(workdir).items()}
  assert len(outputs[(1, 1, 1)]) == 8
  assert outputs[(2, 4, 1)] == outputs[(1, 1, 1)]
