"""Sharded train state and the jitted train step.

The state is a plain pytree (checkpointed as is):
  params     nnx.State of the model's nnx.Param leaves, sharded from the logical annotations
  opt_state  optax state (mu/nu sharded like their parameters; counters replicated)
  step       int32 scalar, number of batches consumed (skipped non-finite steps included)
  rng        uint32 key data; row r of step s draws its masks from fold_in(fold_in(key, s), r)

The step is nnx.split/merge inside jax.jit with explicit in/out shardings and the state donated. A batch of
R rows is viewed as (R / A, A, L) and scanned over its A = train.grad_accum_steps micro-batches (micro-batch
a takes rows a, A + a, 2A + a, ...: every device keeps its own rows, no resharding). Gradients are summed
and divided by the loss denominator of the whole batch, so accumulation reproduces the full-batch step.
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
from omnidiff_jax.models.dream import DreamModel
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


def _state_fn(cfg: ml_collections.ConfigDict, tx: optax.GradientTransformation) -> Callable[[], dict]:
  def init() -> dict:
    params = nnx.state(DreamModel(cfg.model, rngs=nnx.Rngs(cfg.train.seed)), nnx.Param)
    return dict(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.key(cfg.train.seed)))
  return init


def make_trainer(cfg: ml_collections.ConfigDict, mesh: Mesh) -> Trainer:
  """Builds the optimizer, the state shardings on `mesh` and the jitted step for config `cfg`."""
  replicated = NamedSharding(mesh, PartitionSpec())
  with nnx.use_eager_sharding(False), sharding.use_mesh(mesh):
    graphdef, abstract_params, rest = nnx.split(
        nnx.eval_shape(lambda: DreamModel(cfg.model, rngs=nnx.Rngs(0))), nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise ValueError("the model holds non-parameter state; the trainer only handles nnx.Param")
    param_shardings = nnx.get_named_sharding(abstract_params, mesh)
    tx = optlib.make_optimizer(cfg.optimizer, abstract_params, cfg.train.steps)
    init = _state_fn(cfg, tx)
    abstract = jax.eval_shape(init)
    # mu/nu follow their parameter's sharding; masked (frozen) slots stay empty; counters are replicated.
    opt_shardings = optax.tree_map_params(
        tx, lambda leaf, s: leaf if isinstance(leaf, optax.MaskedNode) else s, abstract["opt_state"],
        param_shardings, transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  shardings = dict(params=param_shardings, opt_state=opt_shardings, step=replicated, rng=replicated)
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  schedule = optlib.learning_rate_schedule(cfg.optimizer, cfg.train.steps)
  step_fn = _make_step(cfg, graphdef, tx, schedule, optlib.frozen_mask(abstract_params, cfg.optimizer.frozen))
  data_shardings = {name: batchlib.batch_sharding(mesh) for name in batchlib.FIELDS}
  jitted_step = jax.jit(step_fn, in_shardings=(shardings, data_shardings), out_shardings=(shardings, replicated),
                        donate_argnums=0)
  jitted_init = jax.jit(init, out_shardings=shardings)

  def run_init():
    with nnx.use_eager_sharding(False), sharding.use_mesh(mesh):
      return jitted_init()

  def run_step(state, batch):
    with sharding.use_mesh(mesh):
      return jitted_step(state, batch)

  return Trainer(graphdef=graphdef, tx=tx, schedule=schedule, mesh=mesh, shardings=shardings,
                 abstract_state=abstract_state, init=run_init, step=run_step)


def _make_step(cfg: ml_collections.ConfigDict, graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule,
               frozen) -> Callable:
  vocab = VocabLayout.from_config(cfg.vocab)
  accum = cfg.train.grad_accum_steps
  num_tasks = len(batchlib.TASKS)

  def loss_fn(params, micro: dict[str, jax.Array], row_ids: jax.Array, key: jax.Array):
    params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    noise = losslib.corrupt(key, micro, row_ids, mask_id=vocab.mask_id, eos_id=vocab.eos_id, loss_cfg=cfg.loss)
    model = nnx.merge(graphdef, params)
    logits = model(noise.noisy_ids, positions=micro["positions"], segment_ids=micro["segment_ids"])
    terms = losslib.diffusion_loss(logits, micro["labels"], noise.masked, noise.t, micro["task_ids"],
                                   num_tasks=num_tasks, loss_cfg=cfg.loss)
    return terms.numerator, terms

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
      return jax.tree.map(jnp.add, grads, g), terms

    zeros = jax.tree.map(jnp.zeros_like, state["params"])
    grads, terms = jax.lax.scan(accumulate, zeros, (micro, row_ids))
    terms = jax.tree.map(lambda x: jnp.sum(x, axis=0), terms)
    denominator = jnp.maximum(terms.denominator, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
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
