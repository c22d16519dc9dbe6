"""Preemption-safe Orbax checkpoints of the train state and the data iterator.

Layout: <dir>/<step>/{state, data, meta}
  state  the train state pytree (omnidiff_jax.training.train_step), each array written in its sharding;
         state/params is the DreamModel parameter pure dict, as in converted checkpoints
  data   the Grain iterator state, one JSON per process (grain.checkpoint.CheckpointHandler)
  meta   JSON: stage, step, config
and the step's custom metadata is omnidiff_jax.checkpoints.orbax_io's (format + vocab/model config), so
omnidiff_jax.checkpoints.load and orbax_to_hf read training checkpoints as they read converted ones.

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

from omnidiff_jax.checkpoints import orbax_io

log = logging.getLogger(__name__)

PROJECTOR = "audio_projection"  # the projector's subtree of the parameters (DreamModel attribute)


def model_metadata(cfg: ml_collections.ConfigDict) -> dict:
  """Custom metadata of a training checkpoint step, in omnidiff_jax.checkpoints.orbax_io's format."""
  return dict(format=orbax_io.FORMAT, config=dict(vocab=cfg.vocab.to_dict(), model=cfg.model.to_dict()),
              source="training", stage=cfg.get("stage", ""))


class Checkpointer:
  """CheckpointManager for (state, data iterator, meta) items under `directory`; `custom_metadata` (e.g.
  model_metadata(cfg)) is stored with every step."""

  def __init__(self, directory: str, ckpt_cfg: ml_collections.ConfigDict, custom_metadata: dict | None = None):
    self.directory = epath.Path(directory)
    self.custom_metadata = custom_metadata
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
        meta=ocp.args.JsonSave(meta)), force=force, custom_metadata=self.custom_metadata)

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


def restore_params(path: str, abstract_params: dict, fresh_params: dict):
  """The parameters train.init_from names, placed like `abstract_params`.

  path: a converted checkpoint (tools/convert_checkpoint.py hf-to-orbax) or a training run's checkpoints
  directory (e.g. the previous stage's; its newest step), or one step directory of either: all parameters
  come from its params, the audio projector included when it has one.
  abstract_params: the train state's parameter pure dict of sharded ShapeDtypeStructs; fresh_params: the
  freshly initialised parameters, kept (with a warning) for a projector the checkpoint does not have.
  Raises ValueError listing every parameter the checkpoint lacks or has in another shape.
  """
  try:
    orbax_io.read_metadata(path)
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f"train.init_from={path!r}: {e}; expected a converted checkpoint (tools/convert_checkpoint.py) "
                     "or a training run's checkpoints directory") from e
  stored = {p[1:]: shape for p, (shape, _) in orbax_io.array_shapes(path).items() if p[0] == "params"}
  has_projector = any(p[0] == PROJECTOR for p in stored)
  target = dict(abstract_params) if has_projector else {k: v for k, v in abstract_params.items() if k != PROJECTOR}
  problems = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    p = tuple(k.key for k in key_path)
    if p not in stored:
      problems.append(f"missing params/{'/'.join(p)} {leaf.shape}")
    elif tuple(stored[p]) != tuple(leaf.shape):
      problems.append(f"params/{'/'.join(p)}: shape {tuple(stored[p])}, the model config needs {leaf.shape}")
  if problems:
    raise ValueError(f"train.init_from={path!r} does not fit the model config:\n  " + "\n  ".join(problems)
                     + "\n(a Dream checkpoint needs the Omni vocabulary first: tools/convert_checkpoint.py "
                     "expand-vocab)")
  params = orbax_io.restore(path, {"params": target})["params"]
  if PROJECTOR in abstract_params and not has_projector:
    log.warning("train.init_from=%s has no audio projector weights (params/%s); the projector keeps its fresh "
                "initialisation", path, PROJECTOR)
    params[PROJECTOR] = fresh_params[PROJECTOR]
  elif has_projector and PROJECTOR not in abstract_params:
    log.warning("train.init_from=%s has audio projector weights, but model.audio_projector is not configured; "
                "they are not used", path)
  log.info("initialised parameters from %s", orbax_io.resolve_step(path))
  return params


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

