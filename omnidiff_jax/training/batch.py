"""The batch contract between data pipelines and the train step, and host -> global array assembly.

Every data source (omnidiff_jax.data.synthetic now, the real mixture pipelines later) is a checkpointable
Grain iterator (get_state / set_state) that yields, per process, dicts of numpy arrays, each of shape
(local_rows, seq_len) with local_rows = global_rows / process_count:

  input_ids    int32  clean token ids of packed samples (ChatML prompt + assistant answer + eos tail)
  labels       int32  the clean target id where the position is a target (assistant content, its
                      <|im_end|>/newline and the 1-16 <|endoftext|> tail pads), IGNORE_ID (-100) elsewhere
  positions    int32  position ids, restarting at 0 for every packed sample
  segment_ids  int32  1, 2, ... per packed sample; 0 on the trailing padding (never attended to)
  task_ids     int32  index into TASKS of the sample's task (any value on padding)

The global batch is the concatenation of the processes' local batches in process order. Masking is not
part of the contract: the train step draws it (omnidiff_jax.training.loss).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# TASKS: task ids for per-task loss logging (upstream trainer: loss_tqa, loss_asr, ...), shared with data/.
from omnidiff_jax.data.interfaces import TASKS  # noqa: F401  (re-exported)

FIELDS = ("input_ids", "labels", "positions", "segment_ids", "task_ids")
BATCH_AXES = ("data", "fsdp")  # mesh axes the rows are split over


def check_local_batch(batch: dict[str, np.ndarray], rows: int, seq_len: int) -> None:
  """Raises ValueError naming the field if the batch does not follow the contract above."""
  missing = [f for f in FIELDS if f not in batch]
  if missing:
    raise ValueError(f"data batch lacks fields {missing}; expected {FIELDS}")
  for name in FIELDS:
    arr = batch[name]
    if arr.shape != (rows, seq_len) or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"data batch field {name!r}: expected int array of shape {(rows, seq_len)}, "
                       f"got {arr.dtype} {arr.shape}")
  if "audio_slots" in batch and np.any(batch["audio_slots"]):
    # Training on them would silently learn from <|context_of_audio|> embeddings instead of the features.
    raise ValueError("data batch carries user-speech feature rows (audio_slots), but the train step does not "
                     "splice SenseVoice features into the embeddings yet; train on sources without user speech")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data and fsdp axes, sequence replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(mesh: Mesh, local: dict[str, np.ndarray], global_rows: int) -> dict[str, jax.Array]:
  """Assembles the processes' local (local_rows, L) batches into global (global_rows, L) jax arrays."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(local[name], np.int32),
                                                       (global_rows,) + local[name].shape[1:])
          for name in FIELDS}
