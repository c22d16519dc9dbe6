"""Mixed precision and the 7B stage settings on the tiny model: f32 weights and Adam state, bf16 compute, full
remat; every param_dtype/dtype pair traces; the tiny stage models differ from the 7B ones in shape only; the
per-topology configs' settings (Splash, their remat) train; rows that do not divide the batch axes are refused."""
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import stage1, stage2, stage3
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.data import synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPE_FIELDS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                "vocab_size")
TOPOLOGY_CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("[tg]pu/*.py"))
MODEL_SETTINGS = ("param_dtype", "dtype", "remat_policy", "attention_impl")


def _topology_settings() -> list[dict]:
  """The distinct model settings of the configs/tpu|gpu/ configs, less the stage configs' own (run by
  test_two_steps_with_the_7b_stage_settings_keep_f32_weights_and_adam_state)."""
  distinct = {tuple(cfglib.load_config_file(str(ROOT / f)).model[k] for k in MODEL_SETTINGS) for f in TOPOLOGY_CONFIGS}
  distinct.discard(tuple(stage1.get_config("tiny").model[k] for k in MODEL_SETTINGS))
  return [dict(zip(MODEL_SETTINGS, s)) for s in sorted(distinct)]


def _settings(model_cfg) -> dict:
  """The model config without its shape fields (the projector's widths are shapes too)."""
  settings = {k: v for k, v in model_cfg.to_dict().items() if k not in SHAPE_FIELDS}
  settings["audio_projector"] = {k: v for k, v in settings["audio_projector"].items()
                                 if k not in ("input_size", "hidden_size")}
  return settings


@pytest.mark.parametrize("stage", [stage1, stage2, stage3])
def test_tiny_stage_model_differs_from_the_7b_in_shape_only(stage):
  big, tiny = stage.get_config().model, stage.get_config("tiny").model
  assert _settings(tiny) == _settings(big)
  assert (big.param_dtype, big.dtype, big.remat_policy) == ("float32", "bfloat16", "full")


def _tiny(model_settings=None, mesh=(1, 8, 1)):
  cfg = stage1.get_config("tiny")
  cfg.train.seq_len, cfg.data.max_len, cfg.train.steps = 48, 8, 2
  if model_settings:
    cfg.model.update(model_settings)
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh
  return cfg, sharding.make_mesh(cfg.mesh)


def _two_steps(cfg, mesh):
  trainer = train_step.make_trainer(cfg, mesh)
  state = trainer.init()
  before = jax.tree.map(np.asarray, jax.device_get(state["params"]))
  source = synthetic.make_source(cfg)
  losses = []
  for _ in range(2):
    state, metrics = trainer.step(state, batchlib.global_batch(mesh, next(source), cfg.train.global_rows))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and int(metrics["skipped_steps"]) == 0, losses
  # The stage default (DeepSpeed's WarmupCosineLR) gives the first two updates learning rate 0, so the weights
  # move from the third; Adam's moments of every trained weight move from the first.
  kernel_shape = before["lm_head"]["kernel"].shape
  moments = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["opt_state"]))
             if getattr(x, "shape", None) == kernel_shape]
  assert len(moments) == 2 and all(np.abs(m).max() > 0 for m in moments)
  return state


def test_two_steps_with_the_7b_stage_settings_keep_f32_weights_and_adam_state():
  cfg, mesh = _tiny()
  state = _two_steps(cfg, mesh)
  adam = state["opt_state"].inner_state.inner_states["trained"].inner_state[1][0]
  for tree in (state["params"], adam.mu, adam.nu):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype("float32")}


@pytest.mark.parametrize("settings", _topology_settings(), ids=lambda s: f"{s['remat_policy']}-{s['attention_impl']}")
def test_two_steps_with_the_topology_configs_settings(settings):
  """The attention kernel and remat of configs/tpu|gpu/*.py, with accumulation (Splash through the interpreter)."""
  cfg, mesh = _tiny(dict(settings, attention_interpret=settings["attention_impl"] == "splash"), mesh=(1, 4, 2))
  cfg.train.grad_accum_steps = 2
  _two_steps(cfg, mesh)


@pytest.mark.parametrize("param_dtype, dtype", itertools.product(["float32", "bfloat16"], repeat=2))
def test_train_step_traces_for_every_dtype_pair_and_keeps_the_state_dtypes(param_dtype, dtype):
  cfg, mesh = _tiny(dict(param_dtype=param_dtype, dtype=dtype))
  trainer = train_step.make_trainer(cfg, mesh)
  batch = batchlib.abstract_batch(mesh, cfg.data, cfg.train.global_rows, cfg.train.seq_len)
  state_out, _ = trainer.lower(trainer.abstract_state, batch).out_info
  dtypes = lambda tree: [x.dtype for x in jax.tree.leaves(tree)]
  assert dtypes(state_out) == dtypes(trainer.abstract_state)


def test_rows_that_do_not_divide_the_batch_axes_name_the_mesh_fix():
  cfg, mesh = _tiny()
  cfg.train.grad_accum_steps = 2  # 4 rows per micro-batch over data x fsdp = 8 devices
  with pytest.raises(ValueError, match=r"data x fsdp = 1 x 8.*--config.mesh.tensor=2"):
    train_step.make_trainer(cfg, mesh)
