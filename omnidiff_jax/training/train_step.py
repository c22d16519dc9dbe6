"""Sharded train state and the jitted train step.

The state is a plain pytree (checkpointed as is):
  params     the DreamModel's parameters as a pure dict (nnx.to_pure_dict: the layout converted checkpoints
             use, see omnidiff_jax.checkpoints.orbax_io), sharded from the logical annotations; with
             model.audio_projector it includes the speech-input projector ('audio_projection', replicated)
  opt_state  optax state (mu/nu sharded like their parameters; counters replicated)
  step       int32 scalar, number of batches consumed (skipped non-finite steps included)
  rng        uint32 key data; row r of step s draws its masks from fold_in(fold_in(key, s), r)

The step is nnx.split/merge inside jax.jit with explicit in/out shardings and the state donated. A batch of
R rows is viewed as (R / A, A, L) and scanned over its A = train.grad_accum_steps micro-batches (micro-batch
a takes rows a, A + a, 2A + a, ...: every device keeps its own rows, no resharding). With
optimizer.grad_accum_reduction 'mean' gradients are summed and divided by the loss denominator of the whole
batch, so accumulation reproduces the full-batch step; 'sum' adds each micro-batch's mean-loss gradient
(upstream's DeepSpeed setup, see optimizer.check_grad_accum_reduction).

Batches with user speech (data.feature_rows > 0, see omnidiff_jax.training.batch) run the model from
embeddings: the token embeddings of the corrupted ids with the projected SenseVoice features spliced into
the audio slots (DreamModel.embed_with_audio); the others run from token ids.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omnidiff_jax import sharding
from omnidiff_jax.models.dream import attention
from omnidiff_jax.models.dream.modeling import DreamModel
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import loss as losslib
from omnidiff_jax.training import optimizer as optlib
from omnidiff_jax.vocab import VocabLayout


@dataclasses.dataclass
class Trainer:
  """Everything the loop needs: the jitted step, the state shardings and the abstract state for restore."""
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: Mesh
  shardings: Any          # pytree of NamedSharding, same structure as the state
  abstract_state: Any     # pytree of ShapeDtypeStruct with shardings (restore target)
  init: Callable[[], Any]
  step: Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]]
  lower: Callable[[Any, dict[str, Any]], jax.stages.Lowered]  # the step lowered for (abstract) state and batch
  fields: tuple[str, ...]  # the batch fields the step takes (omnidiff_jax.training.batch.fields)


def _state_fn(cfg: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> Callable[[], dict]:
  def init() -> dict:
    params = nnx.to_pure_dict(nnx.state(DreamModel(cfg.model, rngs=nnx.Rngs(cfg.train.seed)), nnx.Param))
    return dict(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.key(cfg.train.seed)))
  return init


def check_speech_config(cfg: ml_collections.ConfigDict) -> None:
  """User-speech batches (data.feature_rows > 0) need a projector whose input is data.feature_dim wide."""
  if not batchlib.feature_rows(cfg.data):
    return
  projector = cfg.model.get("audio_projector")
  if projector is None:
    raise ValueError(f"data.feature_rows={cfg.data.feature_rows} (user speech) needs model.audio_projector "
                     "(configs/sensevoice.py projector_config)")
  if projector.input_size != cfg.data.feature_dim:
    raise ValueError(f"model.audio_projector.input_size={projector.input_size} must equal "
                     f"data.feature_dim={cfg.data.feature_dim} (the width of the stored speech features)")


def make_trainer(cfg: ml_collections.ConfigDict, mesh: Mesh) -> Trainer:
  """Builds the optimizer, the state shardings on `mesh` and the jitted step for config `cfg`."""
  check_speech_config(cfg)
  check_batch_axes(cfg, mesh)
  if cfg.model.attention_impl == "splash":  # before tracing: a clear error instead of a Pallas lowering failure
    attention.check_splash_platform(mesh.devices.flat[0].platform, cfg.model.get("attention_interpret", False))
  replicated = NamedSharding(mesh, PartitionSpec())
  with nnx.use_eager_sharding(False), sharding.use_mesh(mesh):
    graphdef, param_state, rest = nnx.split(
        nnx.eval_shape(lambda: DreamModel(cfg.model, rngs=nnx.Rngs(0))), nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise ValueError("the model holds non-parameter state; the trainer only handles nnx.Param")
    abstract_params = nnx.to_pure_dict(param_state)
    param_shardings = nnx.to_pure_dict(nnx.get_named_sharding(param_state, mesh))
    tx = optlib.make_optimizer(cfg.optimizer, abstract_params, cfg.train.steps)
    init = _state_fn(cfg, tx)
    abstract = jax.eval_shape(init)
  # mu/nu follow their parameter's sharding; masked (frozen) slots stay empty; counters are replicated.
  # Outside the mesh context: tree_map_params runs tx.init eagerly (on placeholders), and eager arrays cannot
  # be created on a mesh of topology-only devices (ahead-of-time compiles, tools/aot_compile.py).
  opt_shardings = optax.tree_map_params(
      tx, lambda leaf, s: leaf if isinstance(leaf, optax.MaskedNode) else s, abstract["opt_state"],
      param_shardings, transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  shardings = dict(params=param_shardings, opt_state=opt_shardings, step=replicated, rng=replicated)
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  schedule = optlib.learning_rate_schedule(cfg.optimizer, cfg.train.steps)
  step_fn = _make_step(cfg, graphdef, tx, schedule, optlib.frozen_mask(abstract_params, cfg.optimizer.frozen))
  fields = batchlib.fields(cfg.data)
  data_shardings = {name: batchlib.batch_sharding(mesh) for name in fields}
  jitted_step = jax.jit(step_fn, in_shardings=(shardings, data_shardings), out_shardings=(shardings, replicated),
                        donate_argnums=0)
  jitted_init = jax.jit(init, out_shardings=shardings)

  def run_init():
    with nnx.use_eager_sharding(False), sharding.use_mesh(mesh):
      return jitted_init()

  def run_step(state, batch):
    with sharding.use_mesh(mesh):
      return jitted_step(state, batch)

  def lower_step(state, batch):
    with sharding.use_mesh(mesh):
      return jitted_step.lower(state, batch)

  return Trainer(graphdef=graphdef, tx=tx, schedule=schedule, mesh=mesh, shardings=shardings,
                 abstract_state=abstract_state, init=run_init, step=run_step, lower=lower_step, fields=fields)


def check_batch_axes(cfg: ml_collections.ConfigDict, mesh: Mesh) -> None:
  """Every device of the batch axes (data x fsdp) must hold whole rows of every micro-batch."""
  rows, accum = cfg.train.global_rows, cfg.train.grad_accum_steps
  if rows % accum:
    raise ValueError(f"train.global_rows={rows} is not divisible by train.grad_accum_steps={accum}")
  data, fsdp = (mesh.shape[a] for a in batchlib.BATCH_AXES)
  micro, devices = rows // accum, mesh.size
  if micro % (data * fsdp) == 0:
    return
  fits = [t for t in range(1, devices + 1) if devices % t == 0 and micro % (devices // t) == 0]
  hint = (f"put devices on the tensor axis (--config.mesh.data=1 --config.mesh.fsdp=-1 "
          f"--config.mesh.tensor={fits[0]}), or " if fits else "")
  raise ValueError(
      f"{micro} rows per micro-batch (train.global_rows={rows} / train.grad_accum_steps={accum}) cannot be split "
      f"over the {data * fsdp} devices of the batch mesh axes data x fsdp = {data} x {fsdp} (config.mesh): "
      f"{hint}make train.global_rows / train.grad_accum_steps a multiple of {data * fsdp}")


def make_loss_fn(cfg: ml_collections.ConfigDict, graphdef, frozen) -> Callable:
  """loss_fn(params, batch, row_ids, key) -> (numerator, LossTerms) of one (micro-)batch.

  params: the parameter pure dict; batch: the fields of batchlib.fields(cfg.data), (B, ...) each; row_ids:
  (B,) the rows' indices in the step's global batch; key: the step's key. `frozen` (a pytree of bools like
  params) stops the gradient of frozen parameters.
  """
  vocab = VocabLayout.from_config(cfg.vocab)
  num_tasks = len(batchlib.TASKS)
  with_speech = bool(batchlib.feature_rows(cfg.data))

  def loss_fn(params, micro: dict[str, jax.Array], row_ids: jax.Array, key: jax.Array):
    params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    # Audio slots are never targets (checked by batchlib.check_local_batch), so they are never masked.
    noise = losslib.corrupt(key, micro, row_ids, mask_id=vocab.mask_id, eos_id=vocab.eos_id, loss_cfg=cfg.loss)
    model = nnx.merge(graphdef, params)
    where = dict(positions=micro["positions"], segment_ids=micro["segment_ids"])
    if with_speech:
      embeds = model.embed_with_audio(noise.noisy_ids, micro["audio_features"], micro["audio_slots"])
      logits = model(inputs_embeds=embeds, **where)
    else:
      logits = model(noise.noisy_ids, **where)
    terms = losslib.diffusion_loss(logits, micro["labels"], noise.masked, noise.t, micro["task_ids"],
                                   num_tasks=num_tasks, loss_cfg=cfg.loss)
    return terms.numerator, terms

  return loss_fn


def _make_step(cfg: ml_collections.ConfigDict, graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule,
               frozen) -> Callable:
  accum = cfg.train.grad_accum_steps
  sum_of_means = optlib.check_grad_accum_reduction(cfg.optimizer) == "sum"
  loss_fn = make_loss_fn(cfg, graphdef, frozen)

  def step(state: dict, batch: dict[str, jax.Array]) -> tuple[dict, dict[str, jax.Array]]:
    rows = batch["input_ids"].shape[0]
    if rows % accum:
      raise ValueError(f"{rows} rows per batch are not divisible by train.grad_accum_steps={accum}")
    def split(v):  # (R, ...) -> (A, R / A, ...)
      return jnp.swapaxes(v.reshape(rows // accum, accum, *v.shape[1:]), 0, 1)
    micro, row_ids = {k: split(v) for k, v in batch.items()}, split(jnp.arange(rows, dtype=jnp.int32))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(grads, inputs):
      mb, ids = inputs
      (_, terms), g = grad_fn(state["params"], mb, ids, key)
      if sum_of_means:  # each micro-batch's mean-loss gradient (upstream's DeepSpeed accumulation)
        g = jax.tree.map(lambda x: (x / jnp.maximum(terms.denominator, 1.0)).astype(x.dtype), g)
      return jax.tree.map(jnp.add, grads, g), terms

    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    grads, terms = jax.lax.scan(accumulate, zeros, (micro, row_ids))
    terms = jax.tree.map(lambda x: jnp.sum(x, axis=0), terms)
    denominator = jnp.maximum(terms.denominator, 1.0)
    if not sum_of_means:
      # Kept in the parameters' dtype: a bf16 gradient divided by the f32 denominator would turn f32, and
      # Adam's moments with it (apply_if_finite's cond then sees mismatched branch types).
      grads = jax.tree.map(lambda g, p: (g / denominator).astype(p.dtype), grads, state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = dict(params=params, opt_state=opt_state, step=state["step"] + 1, rng=state["rng"])
    metrics = dict(
        loss=terms.numerator / denominator, grad_norm=optax.global_norm(grads),
        learning_rate=schedule(state["step"] - state["opt_state"].total_notfinite),
        masked_tokens=terms.masked_tokens, target_tokens=terms.target_tokens,
        task_loss_sums=terms.task_sums, task_counts=terms.task_counts,
        nonfinite_streak=opt_state.notfinite_count, skipped_steps=opt_state.total_notfinite)
    return new_state, metrics

  return step
