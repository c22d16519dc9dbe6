"""Preemption-safe Orbax checkpoints of the train state and the data iterator.

Layout: <dir>/<step>/{state, data, meta}
  state  the train state pytree (omnidiff_jax.training.train_step), each array written in its sharding
  data   the Grain iterator state, one JSON per process (grain.checkpoint.CheckpointHandler)
  meta   JSON: stage, step, config

Saves are asynchronous (Orbax writes to a temporary directory and renames it when complete, so a killed
save never looks finished), every `checkpoint.save_every` steps, at the end and on SIGTERM; the last
`checkpoint.keep` are kept. Restoring takes a target with shardings, so a state saved on one mesh restores
onto any other mesh or device count. If the newest checkpoint cannot be read, it is moved aside to
`<step>.unreadable` with a message and the previous one is used.
"""
from __future__ import annotations

import logging
import signal
import threading

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class Checkpointer:
  """CheckpointManager for (state, data iterator, meta) items under `directory`."""

  def __init__(self, directory: str, ckpt_cfg: ml_collections.ConfigDict):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory.resolve(), item_names=("state", "data", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=ckpt_cfg.keep, save_interval_steps=ckpt_cfg.save_every,
                                             enable_async_checkpointing=ckpt_cfg.async_save,
                                             cleanup_tmp_directories=True))

  def save(self, step: int, state, data_iter, meta: dict, *, force: bool = False) -> bool:
    """Starts saving if `step` is due (or force); returns whether a save started."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
        meta=ocp.args.JsonSave(meta)), force=force)

  def restore_latest(self, abstract_state, data_iter) -> tuple[object, int] | None:
    """(state, step) of the newest readable checkpoint, with data_iter moved to its position; None if none.

    Only the newest checkpoint may be unreadable (a save cut short by the file system or a crash); if there
    is no earlier one or it fails too, the cause is more likely a config/code mismatch and this raises.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for attempt, step in enumerate(steps[:2]):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iter)))
        return restored["state"], step
      except Exception as e:  # noqa: BLE001 - an unreadable newest checkpoint falls back to the previous one
        if attempt == 1 or len(steps) == 1:
          raise RuntimeError(f"checkpoint(s) {steps[:attempt + 1]} under {self.directory} are unreadable and "
                             "there is no earlier one to fall back to; does the config (model shape, "
                             "optimizer, frozen parameters) match the run that wrote them?") from e
        log.warning("checkpoint %s/%d is unreadable (%s: %s); moving it to %d.unreadable and falling back to "
                    "the previous one", self.directory, step, type(e).__name__, str(e)[:300], step)
        self._move_aside(step)
    return None

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = self.directory / str(step)
      path.rename(self.directory / f"{step}.unreadable")
    multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def restore_params(directory: str, abstract_params):
  """Parameters of the newest checkpoint under `directory` (e.g. the previous stage's final state)."""
  with ocp.CheckpointManager(epath.Path(directory).resolve(), item_names=("state",)) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"train.init_from={directory!r} holds no checkpoint (expected <dir>/<step>/state)")
    target = {"params": abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
  log.info("initialised parameters from %s step %d", directory, step)
  return restored["state"]["params"]


class PreemptionFlag:
  """Context manager: SIGTERM sets `.requested` instead of killing the process (checked between steps).

  With several processes, `should_stop()` agrees across processes so all of them save the same step.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def __enter__(self) -> "PreemptionFlag":
    self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
    return self

  def __exit__(self, *exc) -> None:
    signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self) -> bool:
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    return bool(multihost_utils.process_allgather(local).any())

