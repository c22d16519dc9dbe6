"""The training loop of one curriculum stage.

  resume from <workdir>/checkpoints if any (state + data position), else init (parameters from
  train.init_from when set: a converted checkpoint or a previous stage's checkpoints) -> for each step: next
  local batch -> global array -> jitted step -> metrics -> checkpoint when due, at the end and on SIGTERM.
  Stops with NonFiniteError after optimizer.max_nonfinite_steps skipped (NaN/Inf) updates in a row; the
  checkpoints on disk are the last good state. With an eval_hook and eval.every > 0, every eval.every steps (and
  at the last) the hook gets the step and the current model and its metrics go to metrics.jsonl / TensorBoard.
  The hook is passed in (tools/train.py builds one from omnidiff_jax.eval): training does not import eval.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from omnidiff_jax import sharding
from omnidiff_jax.data import pipeline, synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import checkpointing, metrics as metricslib, train_step

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
  pass


def make_data_source(cfg: ml_collections.ConfigDict):
  """This process's iterator of local batches, for cfg.data.source."""
  sources = {"synthetic": synthetic.make_source, "mixture": pipeline.make_source}
  if cfg.data.source not in sources:
    raise ValueError(f"unknown data.source {cfg.data.source!r}; available: {sorted(sources)}")
  return sources[cfg.data.source](cfg, process_index=jax.process_index(), process_count=jax.process_count())


def digest(batch: dict[str, np.ndarray]) -> str:
  """Short hash of the batch's contract fields (those it has), to audit resume."""
  h = hashlib.sha1()
  for name in batchlib.FIELDS + batchlib.AUDIO_FIELDS:
    if name in batch:
      h.update(np.ascontiguousarray(batch[name]).tobytes())
  return h.hexdigest()[:16]


def init_state(cfg: ml_collections.ConfigDict, trainer: train_step.Trainer) -> dict:
  """A fresh train state; with train.init_from, its parameters come from that checkpoint (a converted
  Dream/Omni checkpoint or a previous stage's checkpoints, see checkpointing.restore_params)."""
  state = trainer.init()
  if cfg.train.init_from:
    state["params"] = checkpointing.restore_params(cfg.train.init_from, trainer.abstract_state["params"],
                                                   state["params"])
  return state


EvalHook = Callable[[int, nnx.Module], dict[str, float]]


def train(cfg: ml_collections.ConfigDict, workdir: str, eval_hook: EvalHook | None = None) -> dict:
  """Runs (or resumes) the stage to cfg.train.steps. Returns the last step's scalar metrics and status.

  eval_hook(step, model) -> {name: value}: run every cfg.eval.every steps (see the module docstring)."""
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  data = make_data_source(cfg)
  rows = cfg.train.global_rows // jax.process_count()
  speech = dict(num_feature_rows=batchlib.feature_rows(cfg.data), feature_dim=cfg.data.get("feature_dim", 0))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), cfg.checkpoint,
                                    checkpointing.model_metadata(cfg))
  restored = ckpt.restore_latest(trainer.abstract_state, data)
  if restored is not None:
    state, step = restored
    log.info("resumed from step %d", step)
  else:
    state, step = init_state(cfg, trainer), 0
  logger = metricslib.MetricLogger(cfg, workdir, start_step=step)
  meta = dict(stage=cfg.stage, config=cfg.to_dict())
  status, pending = "completed", None
  try:
    with checkpointing.PreemptionFlag() as preemption:
      while step < cfg.train.steps:
        local = next(data)
        batchlib.check_local_batch(local, rows, cfg.train.seq_len, **speech)
        state, step_metrics = trainer.step(
            state, batchlib.global_batch(mesh, local, cfg.train.global_rows, trainer.fields))
        step += 1
        if pending is not None:
          _log_and_check(logger, cfg, *pending)
        pending = (step, step_metrics, digest(local))
        stop = preemption.should_stop()
        every = cfg.get("eval", {}).get("every", 0)
        if eval_hook is not None and every and (step % every == 0 or step == cfg.train.steps):
          logger.log_eval(step, eval_hook(step, nnx.merge(trainer.graphdef, state["params"])))
        ckpt.save(step, state, data, dict(meta, step=step), force=stop or step == cfg.train.steps)
        if stop:
          status = "preempted"
          break
      if pending is not None:
        _log_and_check(logger, cfg, *pending)
    ckpt.wait()
  finally:
    ckpt.close()
    logger.close()
  return dict(logger.last, step=step, status=status)


def _log_and_check(logger: metricslib.MetricLogger, cfg: ml_collections.ConfigDict, step: int, step_metrics,
                   data_digest: str) -> None:
  scalars = logger.log(step, step_metrics, data_digest)
  if scalars["nonfinite_streak"] >= cfg.optimizer.max_nonfinite_steps:
    raise NonFiniteError(f"{int(scalars['nonfinite_streak'])} non-finite updates in a row up to step {step}; "
                         "stopping (the checkpoints on disk hold the last good state)")
