"""Sampling on a device mesh (8 fake CPU devices): the same tokens as on one device, through the Python API
and through tools/sample.py --checkpoint --mesh; the inference mesh default; Splash's row-length padding."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from omnidiff_jax import sharding
from omnidiff_jax.checkpoints import orbax_io
from omnidiff_jax.sampling import SamplerConfig, api, generate, generate_task
from omnidiff_jax.sampling import sampler as sampler_lib
from omnidiff_jax.vocab import VocabLayout

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


def _tiny():
  from configs import tiny
  return tiny.get_config()


def _sharp_model(cfg, mesh=None):
  """The tiny random model with weights scaled up (well separated confidences: no float near-ties, whose order
  could differ between meshes), created directly sharded over `mesh`."""
  model = sharding.create_model(cfg.model, mesh, seed=0)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map_with_path(
      lambda path, x: x * 6.0 if any(getattr(k, "key", None) in ("kernel", "embedding") for k in path) else x,
      params))
  return model


def _mesh(sizes):
  return sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, sizes))))


def test_inference_mesh_default_is_tensor_parallel():
  assert sharding.inference_mesh_shape(ml_collections.ConfigDict(dict(num_heads=28)), 8) == (1, 2, 4)
  assert sharding.inference_mesh_shape(ml_collections.ConfigDict(dict(num_heads=4)), 8) == (1, 2, 4)
  assert sharding.inference_mesh_shape(ml_collections.ConfigDict(dict(num_heads=32)), 8) == (1, 1, 8)
  assert sharding.inference_mesh_shape(ml_collections.ConfigDict(dict(num_heads=28)), 1) == (1, 1, 1)


@needs_8
# Plain t2i on a mesh is test_sample_cli_mesh_equals_one_device's.
@pytest.mark.parametrize("task, overrides", [("tts", {}), ("t2i", dict(block_size=8, kv_cache=True))],
                         ids=["tts", "t2i_kv_cache"])
def test_sharded_sampling_equals_one_device(task, overrides):
  cfg = _tiny()
  vocab = VocabLayout.from_config(cfg.vocab)
  prompts = [[3, 5, 7, 9, 20, 30], [11, 12, 40]]
  kw = dict(prompt_ids=prompts, region_len=24, steps=8, seed=1, **overrides)
  want = np.asarray(generate_task(_sharp_model(cfg), vocab, task, **kw)[0].tokens)
  for sizes in [(1, 1, 8), (2, 1, 4)]:
    model = _sharp_model(cfg, _mesh(sizes))
    assert len(model.lm_head.kernel.get_value().sharding.device_set) == 8
    got = np.asarray(generate_task(model, vocab, task, **kw)[0].tokens)
    np.testing.assert_array_equal(got, want, err_msg=f"mesh {sizes}")


def _run_cli(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, str(ROOT / "tools" / "sample.py"), *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _write_checkpoint(cfg, model, step_dir):
  """`model`'s parameters as an Orbax checkpoint step with cfg's vocab and model sections."""
  params = nnx.to_flat_state(nnx.state(model, nnx.Param))
  orbax_io.write(step_dir, ((("params", *path), var.get_value()) for path, var in params),
                 dict(format=orbax_io.FORMAT, config=ml_collections.ConfigDict(dict(vocab=cfg.vocab,
                                                                                   model=cfg.model)).to_dict()))


@needs_8
def test_sample_cli_mesh_equals_one_device(tmp_path):
  """tools/sample.py --checkpoint --mesh 1,1,8 (t2i) and 2,1,4 (tts) (checkpoints.load(..., mesh=)) vs 1,1,1."""
  cfg = _tiny()
  _write_checkpoint(cfg, _sharp_model(cfg), tmp_path / "ck" / "0")
  for task, mesh in (("t2i", "1,1,8"), ("tts", "2,1,4")):
    tokens = []
    for sizes in ("1,1,1", mesh):
      _run_cli(f"--checkpoint={tmp_path / 'ck'}", f"--task={task}", "--prompt_ids=3,5,7,9,20,30;11,12,40",
               "--steps=8", "--region_len=24", "--seed=1", f"--mesh={sizes}", f"--out={tmp_path / 'out.json'}")
      tokens.append([row["tokens"] for row in json.loads((tmp_path / "out.json").read_text())["results"]])
    assert tokens[1] == tokens[0], (task, mesh)


@needs_8
def test_sample_cli_loads_a_training_checkpoint_in_the_compute_dtype(tmp_path):
  """A training checkpoint (the stage configs' f32 weights, bf16 compute, speech projector) loads as bf16
  through tools/sample.py (what lets the 7B sample on one 16 GiB chip), or as --param_dtype asks."""
  from configs import stage1
  cfg = stage1.get_config("tiny")
  assert (cfg.model.param_dtype, cfg.model.dtype) == ("float32", "bfloat16")
  model = sharding.create_model(cfg.model, seed=0)
  _write_checkpoint(cfg, model, tmp_path / "ck" / "0")
  stored = orbax_io.array_shapes(tmp_path / "ck")
  assert {dtype.name for path, (_, dtype) in stored.items()} == {"float32"}
  assert any(path[1] == "audio_projection" for path in stored), "the stage config's speech projector is not stored"
  count = sum(int(np.prod(shape)) for shape, _ in stored.values())
  for flags, dtype, itemsize in (([], "bfloat16", 2), (["--param_dtype=float32"], "float32", 4)):
    out = _run_cli(f"--checkpoint={tmp_path / 'ck'}", "--task=t2i", "--prompt_ids=3,5,7", "--steps=2",
                   "--region_len=8", "--mesh=1,1,2", *flags, f"--out={tmp_path / 'out.json'}")
    assert f"{count / 1e9:.3g} B parameters as {dtype}, {count * itemsize / 2**30:.3g} GiB in all on 2 devices" in \
        out.stderr, out.stderr[-2000:]


def test_padding_the_row_length_changes_no_token():
  """Rows padded at the end to 128 (what build_rows does for attention_impl='splash') sample the same tokens."""
  cfg = _tiny()
  model = _sharp_model(cfg)
  vocab = VocabLayout.from_config(cfg.vocab)
  sampler_cfg = SamplerConfig(steps=6, alg="entropy", top_p=0.9, block_size=8, kv_cache=True)
  prompts = [[3, 5, 7, 9, 20, 30], [11, 12, 40]]
  want = np.asarray(generate(model, sampler_cfg, vocab, prompt_ids=prompts, region_len=16).tokens)

  ids, mask = api.left_pad(prompts, vocab.pad_id)
  rows = sampler_lib.build_rows(model, model.embed(ids), mask, 16, sampler_cfg)
  padded = sampler_lib.pad_length(rows, 128)
  assert padded.base_embeds.shape[1] == 128 and padded.tail_padding == 128 - 6 - 16
  assert (np.asarray(padded.segment_ids)[:, 22:] == 0).all()
  region = api.initial_region(2, 16, vocab.mask_id)
  specials = sampler_lib.Specials(mask_id=vocab.mask_id, vocab_size=384)
  got = sampler_lib.run(model, sampler_cfg, padded, region, jax.random.key(0), specials)
  np.testing.assert_array_equal(np.asarray(got.tokens), want)

  splash_cfg = _tiny()
  splash_cfg.model.attention_impl = "splash"
  splash_model = sharding.create_model(splash_cfg.model, seed=0)
  splash_rows = sampler_lib.build_rows(splash_model, splash_model.embed(ids), mask, 16, sampler_cfg)
  assert splash_rows.base_embeds.shape[1] == 128 and splash_rows.tail_padding == 106
