"""The eval sweep on the tiny model (random weights) over a tiny fake MME copy: table and plots, resume after a
kill, and the same per-sample outputs on 8 fake devices (2 data shards x 4 fsdp) as on one device."""
import json
import os

import jax
import ml_collections
import pytest

import eval_fakes
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
  return eval_fakes.make_mme(tmp_path_factory.mktemp("mme"))


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


def _context(backbone_cfg, vocab_and_tokenizer, mesh, cfg, image_tokenizer=None):
  vocab, tokenizer = vocab_and_tokenizer
  ctx = Context(sharding.create_model(backbone_cfg.model, mesh, seed=0), vocab, tokenizer, cfg.networks)
  if image_tokenizer is not None:
    ctx.image_tokenizer = image_tokenizer  # the same random MAGVIT-v2 (saves rebuilding it)
  return ctx


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


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, mme_root, backbone_cfg, vocab_and_tokenizer):
  """A two-setting sweep on one device killed after three of its four cells, then run again. Returns the
  workdir, the table rows, the files of the cells finished before the kill, the cells run after it, the context."""
  workdir = tmp_path_factory.mktemp("sweep")
  cfg = _eval_cfg(mme_root, [dict(name="steps4", steps=4), dict()])
  mesh = _mesh((1, 1, 1))
  with pytest.warns(UserWarning, match="no MAGVIT-v2 weights"):
    ctx = _context(backbone_cfg, vocab_and_tokenizer, mesh, cfg)
    ctx.image_tokenizer
  calls = []
  real_generate = generate.generate

  def killed_after_three_cells(*args, **kwargs):
    if len(calls) == 3:
      raise KeyboardInterrupt("killed")
    calls.append(kwargs)
    return real_generate(*args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(generate, "generate", killed_after_three_cells)
    with pytest.raises(KeyboardInterrupt):
      runner.sweep(cfg, ctx, mesh, str(workdir))
    assert not (workdir / "results.md").exists()
    before = {p.relative_to(workdir).as_posix(): p.read_bytes() for p in workdir.rglob("shard_*")}
    calls.clear()
    rows = runner.sweep(cfg, ctx, mesh, str(workdir))
  return workdir, rows, before, len(calls), ctx


def test_killed_sweep_resumes_without_recomputing_finished_cells(killed_then_resumed):
  workdir, _, before, cells_run_after, _ = killed_then_resumed
  assert sorted(p for p in before if p.endswith(".done.json")) == [
      "mme/default/shard_00000.done.json", "mme/steps4/shard_00000.done.json", "mme/steps4/shard_00001.done.json"]
  assert cells_run_after == 1  # only the unfinished cell ran
  assert all((workdir / p).read_bytes() == data for p, data in before.items())


def test_two_setting_sweep_writes_records_table_and_plots(killed_then_resumed):
  workdir, rows, _, _, _ = killed_then_resumed
  records = _records(workdir)
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
    assert (workdir / name).stat().st_size > 0, name
  assert "| mme | default | perception |" in (workdir / "results.md").read_text()
  # MME's own result files, for calculation.py: the questions in file order with the predictions.
  exported = (workdir / "mme" / "default" / "export" / "color.txt").read_text().splitlines()
  assert [line.split("\t")[:3] for line in exported] == [
      [image, question, answer] for image in ("a.png", "b.png")
      for question, answer in (("Is there a red bus?", "Yes"), ("Is the dog brown?", "No"))]
  assert [line.split("\t")[3] for line in exported] == [
      records[("default", f"color/{i:05d}")]["metric"]["prediction"] for i in range(1, 5)]


def test_eight_devices_give_the_same_outputs_as_one(tmp_path, mme_root, backbone_cfg, vocab_and_tokenizer,
                                                    killed_then_resumed):
  one_device_dir, _, _, _, one_device_ctx = killed_then_resumed
  cfg = _eval_cfg(mme_root, [dict()], batch_size=4)
  mesh = _mesh((2, 4, 1))
  ctx = _context(backbone_cfg, vocab_and_tokenizer, mesh, cfg, one_device_ctx.image_tokenizer)
  runner.sweep(cfg, ctx, mesh, str(tmp_path))
  eight = {k: (r["tokens"], r["output"]) for k, r in _records(tmp_path).items()}
  one = {k: (r["tokens"], r["output"]) for k, r in _records(one_device_dir).items() if k[0] == "default"}
  assert len(one) == 8 and eight == one
