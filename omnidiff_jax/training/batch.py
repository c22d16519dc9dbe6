"""The batch contract between data pipelines and the train step, and host -> global array assembly.

Every data source (omnidiff_jax.data.synthetic, omnidiff_jax.data.pipeline) is a checkpointable Grain
iterator (get_state / set_state) that yields, per process, dicts of numpy arrays with local_rows =
global_rows / process_count rows (R below):

  input_ids      (R, L) int32  clean token ids of packed samples (ChatML prompt + assistant answer + eos tail)
  labels         (R, L) int32  the clean target id where the position is a target (assistant content, its
                               <|im_end|>/newline and the 1-16 <|endoftext|> tail pads), IGNORE_ID (-100)
                               elsewhere
  positions      (R, L) int32  position ids, restarting at 0 for every packed sample
  segment_ids    (R, L) int32  1, 2, ... per packed sample; 0 on the trailing padding (never attended to)
  task_ids       (R, L) int32  index into TASKS of the sample's task (any value on padding)

and, exactly when the config's data.feature_rows F > 0 (user speech; the synthetic source has F = 0 and
carries neither field, and the step then runs the plain token path):

  audio_slots    (R, L) int32    1 at a user-speech slot (`<|context_of_audio|>`, always a non-target:
                                 labels are IGNORE_ID there, so the corruption never masks it), else 0;
                                 at most F per row
  audio_features (R, F, D) float32  the frozen SenseVoice encoder's output rows (D = data.feature_dim), the
                                 k-th row for the row's k-th slot; rows after the used ones are ignored

The global batch is the concatenation of the processes' local batches in process order. Masking is not
part of the contract: the train step draws it (omnidiff_jax.training.loss).
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omnidiff_jax.data import interfaces

# Task ids for per-task loss logging (upstream trainer: loss_tqa, loss_asr, ...), shared with data/.
TASKS, IGNORE_ID = interfaces.TASKS, interfaces.IGNORE_ID

FIELDS = ("input_ids", "labels", "positions", "segment_ids", "task_ids")
AUDIO_FIELDS = ("audio_slots", "audio_features")
DTYPES = dict.fromkeys(FIELDS + ("audio_slots",), np.int32) | {"audio_features": np.float32}
BATCH_AXES = ("data", "fsdp")  # mesh axes the rows are split over


def feature_rows(data_cfg: ml_collections.ConfigDict) -> int:
  """F: user-speech feature rows per packed row (0: the source carries no speech)."""
  return int(data_cfg.get("feature_rows", 0))


def fields(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields a batch of this data config carries."""
  return _fields(feature_rows(data_cfg))


def _fields(num_feature_rows: int) -> tuple[str, ...]:
  return FIELDS + (AUDIO_FIELDS if num_feature_rows else ())


def check_local_batch(batch: dict[str, np.ndarray], rows: int, seq_len: int, *, num_feature_rows: int = 0,
                      feature_dim: int = 0) -> None:
  """Raises ValueError naming the field if the batch does not follow the contract above.

  num_feature_rows, feature_dim: F and D of the config (data.feature_rows, data.feature_dim); F = 0 means
  no user speech, and a batch with audio slots is then refused.
  """
  names = _fields(num_feature_rows)
  missing = [f for f in names if f not in batch]
  if missing:
    raise ValueError(f"data batch lacks fields {missing}; expected {names} (data.feature_rows={num_feature_rows})")
  for name in names:
    if name == "audio_features":  # (R, F, D) float, checked below
      continue
    arr = batch[name]
    if arr.shape != (rows, seq_len) or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"data batch field {name!r}: expected int array of shape {(rows, seq_len)}, "
                       f"got {arr.dtype} {arr.shape}")
  if not num_feature_rows:
    if "audio_slots" in batch and np.any(batch["audio_slots"]):
      raise ValueError("data batch field 'audio_slots' marks user-speech slots, but data.feature_rows is 0 "
                       "(no feature rows configured); set data.feature_rows and data.feature_dim")
    return
  features, slots = batch["audio_features"], batch["audio_slots"]
  if features.shape != (rows, num_feature_rows, feature_dim) or not np.issubdtype(features.dtype, np.floating):
    raise ValueError(f"data batch field 'audio_features': expected float array of shape "
                     f"{(rows, num_feature_rows, feature_dim)} (data.feature_rows, data.feature_dim), got "
                     f"{features.dtype} {features.shape}")
  if not np.isin(slots, (0, 1)).all():
    raise ValueError("data batch field 'audio_slots': expected only 0 and 1")
  per_row = slots.sum(axis=1)
  if per_row.max(initial=0) > num_feature_rows:
    raise ValueError(f"data batch field 'audio_slots': row {int(per_row.argmax())} has {int(per_row.max())} "
                     f"slots, more than data.feature_rows={num_feature_rows} feature rows")
  if np.any((slots == 1) & (batch["labels"] != IGNORE_ID)):
    raise ValueError("data batch field 'audio_slots': a user-speech slot is a target (labels != IGNORE_ID); "
                     "speech slots belong to user turns")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data and fsdp axes, everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def abstract_batch(mesh: Mesh, data_cfg: ml_collections.ConfigDict, global_rows: int, seq_len: int
                   ) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and shardings of a global batch of this data config (for ahead-of-time compiles)."""
  shapes = dict.fromkeys(FIELDS + ("audio_slots",), (global_rows, seq_len)) | {
      "audio_features": (global_rows, feature_rows(data_cfg), data_cfg.get("feature_dim", 0))}
  return {name: jax.ShapeDtypeStruct(shapes[name], DTYPES[name], sharding=batch_sharding(mesh))
          for name in fields(data_cfg)}


def global_batch(mesh: Mesh, local: dict[str, np.ndarray], global_rows: int,
                 names: tuple[str, ...] = FIELDS) -> dict[str, jax.Array]:
  """Assembles the processes' local (local_rows, ...) fields `names` into global (global_rows, ...) jax arrays."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(local[name], DTYPES[name]),
                                                       (global_rows,) + local[name].shape[1:])
          for name in names}
