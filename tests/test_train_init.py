"""train.init_from takes a converted Dream/Omni checkpoint or a training run's checkpoints; trained checkpoints
load and export like converted ones (one layout, omnidiff_jax.checkpoints.orbax_io)."""
import json
import logging

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.torch import save_file

from omnidiff_jax import checkpoints, sharding
from omnidiff_jax.checkpoints import convert, orbax_io
from omnidiff_jax.training import checkpointing, loop, train_step
from test_train_speech import _cfg, _host, _leaves, speech_mixture_cfg

torch_reference = pytest.importorskip("torch_reference")

PROJECTOR = "audio_projection"


def _hf_dir(path, cfg, *, projector: bool):
  """A tiny random HF Omni checkpoint: Qwen2 backbone, a SenseVoice stand-in and (optionally) the projector."""
  reference = torch_reference.random_qwen2(cfg.model, seed=0)
  tensors = {k: v.contiguous() for k, v in reference.state_dict().items()}
  tensors["model.audio_model.encoder.after_norm.weight"] = torch.ones(5)
  if projector:
    width, hidden = cfg.model.audio_projector.input_size, cfg.model.hidden_size
    gen = torch.Generator().manual_seed(1)
    for key, shape in (("pre_proj_layernorm.weight", (width,)), ("pre_proj_layernorm.bias", (width,)),
                       ("mlp.0.weight", (hidden, width)), ("mlp.2.weight", (hidden, hidden))):
      tensors["model.audio_projection." + key] = torch.randn(shape, generator=gen)
  path.mkdir()
  save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  (path / "config.json").write_text(json.dumps(reference.config.to_dict()))
  return {k: v.numpy() for k, v in tensors.items()}


def _model_params(path):
  """The parameters checkpoints.load gives for `path`, as a host pure dict."""
  model, _ = checkpoints.load(path)
  return _host(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _assert_equal(got, want):
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_init_from_a_converted_checkpoint(tmp_path, caplog):
  cfg = _cfg(feature_rows=0)
  cfg.checkpoint.async_save, cfg.checkpoint.save_every, cfg.train.steps = False, 1, 2
  trainer = train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh))
  fresh = _host(trainer.init()["params"])
  for projector in (True, False):
    hf = _hf_dir(tmp_path / f"hf_{projector}", cfg, projector=projector)
    convert.hf_to_orbax(tmp_path / f"hf_{projector}", tmp_path / f"conv_{projector}", config=cfg, progress=False)
    cfg.train.init_from = str(tmp_path / f"conv_{projector}")
    with caplog.at_level(logging.WARNING):
      params = _host(loop.init_state(cfg, trainer)["params"])
    converted = _model_params(cfg.train.init_from)  # what checkpoints.load gives
    if projector:  # converted into params/audio_projection, HF (out, in) -> our (in, out)
      _assert_equal(converted[PROJECTOR], {
          "pre_proj_layernorm": {"scale": hf["model.audio_projection.pre_proj_layernorm.weight"],
                                 "bias": hf["model.audio_projection.pre_proj_layernorm.bias"]},
          "linear_1": {"kernel": hf["model.audio_projection.mlp.0.weight"].T},
          "linear_2": {"kernel": hf["model.audio_projection.mlp.2.weight"].T}})
      _assert_equal(params, converted)
      assert "no audio projector weights" not in caplog.text
    else:
      assert PROJECTOR not in converted
      _assert_equal(params.pop(PROJECTOR), fresh[PROJECTOR])
      _assert_equal(params, converted)  # the backbone, as converted
      assert "no audio projector weights" in caplog.text

  # Training from it: the step-1 checkpoint holds the converted parameters (the learning rate of step 1 is 0).
  cfg.train.init_from = str(tmp_path / "conv_True")
  expected = _host(loop.init_state(cfg, trainer)["params"])
  result = loop.train(cfg, str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])
  first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
  assert first["step"] == 1 and first["learning_rate"] == 0.0
  _assert_equal(_model_params(tmp_path / "run" / "checkpoints" / "1"), expected)


def test_init_from_errors(tmp_path):
  cfg = _cfg(feature_rows=0)

  def restore(path):  # the errors come before any parameter is read or initialised
    abstract = train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh)).abstract_state["params"]
    return checkpointing.restore_params(str(path), abstract, None)

  with pytest.raises(ValueError, match="expected a converted checkpoint .* or a training run's checkpoints"):
    restore(tmp_path / "nothing")
  _hf_dir(tmp_path / "hf", cfg, projector=False)
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "conv", config=cfg, progress=False)
  cfg.model.intermediate_size = 128  # another model shape than the checkpoint's
  with pytest.raises(ValueError, match=r"does not fit the model config:\n  params/layers/mlp/down_proj/kernel: "
                                       r"shape \(2, 256, 128\), the model config needs \(2, 128, 128\)"):
    restore(tmp_path / "conv")


def test_a_trained_checkpoint_initialises_the_next_stage_and_exports_to_hf(tmp_path):
  cfg = speech_mixture_cfg(tmp_path, steps=3)
  loop.train(cfg, str(tmp_path / "run"))
  run = tmp_path / "run" / "checkpoints"
  trained = _model_params(run)
  assert orbax_io.read_metadata(run)["source"] == "training"
  trainer = train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh))
  assert np.abs(trained[PROJECTOR]["linear_1"]["kernel"] - _host(trainer.init()["params"])[PROJECTOR]["linear_1"][
      "kernel"]).max() > 1e-5
  # A previous stage's checkpoints directory: all parameters, projector included.
  cfg.train.init_from = str(run)
  _assert_equal(_host(loop.init_state(cfg, trainer)["params"]), trained)
  # Export to HF (backbone under Qwen2 names, projector under Omni's), convert back, initialise from that.
  keys = convert.orbax_to_hf(run, tmp_path / "hf", progress=False)
  assert {"model.audio_projection.mlp.0.weight", "model.audio_projection.mlp.2.weight",
          "model.audio_projection.pre_proj_layernorm.weight", "lm_head.weight"} <= set(keys)
  assert not [k for k in keys if "opt_state" in k or "mu" in k.split(".")]
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "conv", config=cfg, progress=False)
  cfg.train.init_from = str(tmp_path / "conv")
  restored = _host(loop.init_state(cfg, trainer)["params"])
  _assert_equal(restored, trained)
  assert set(_leaves(restored)) == set(_leaves(trained))
