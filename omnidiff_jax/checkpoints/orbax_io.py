"""Our Orbax checkpoint format, written parameter by parameter and read back onto any mesh.

One layout for converted and trained models (an Orbax CheckpointManager directory):

  <root>/<step>/state/...              item 'state': {'params': <DreamModel nnx.Param pure dict>, ...}
  <root>/<step>/_CHECKPOINT_METADATA   custom_metadata: {'format': FORMAT, 'config': {'vocab': .., 'model': ..},
                                                         ...}

  converted (convert.hf_to_orbax)  state = {'params': backbone + 'audio_projection' (when the source has
                                   Omni's projector), 'extra': {<HF key split on '.'>: array}} ('extra',
                                   optional: the frozen SenseVoice encoder under its HF names); metadata
                                   also 'hf_config' (config.json of the source) and 'extra_keys'
  training (training.checkpointing) <workdir>/checkpoints: state = {'params': backbone + 'audio_projection'
                                   (when model.audio_projector is set), 'opt_state', 'step', 'rng'} and the
                                   items 'data' (Grain iterator) and 'meta'; metadata also 'source':
                                   'training' and 'stage'

`load` and `restore` read only the 'params' subtree they are given (partial restore), so both load as a
DreamModel (its config from the metadata), convert.orbax_to_hf exports both, and train.init_from takes both
(omnidiff_jax.training.checkpointing.restore_params).

Conversion writes with Orbax's partial save (one `partial.save` per parameter, so only one parameter is
alive at a time) and commits with `partial.finalize`, an atomic rename: until then the checkpoint lives
in '<step>.partial_save' and CheckpointManager does not list it, so an interrupted conversion never
loads as complete.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint import v1 as ocp_v1

from omnidiff_jax import sharding
from omnidiff_jax.models.dream import params as hf_names
from omnidiff_jax.models.dream.modeling import DreamModel

STATE = "state"  # the Orbax item holding the arrays
STEP_METADATA = "_CHECKPOINT_METADATA"  # Orbax's per-step metadata file (holds the custom metadata)
FORMAT = "omnidiff_jax.checkpoint/1"
PARTIAL_SUFFIX = ".partial_save"


def nested(path: tuple[str, ...], value: Any) -> dict:
  """('a', 'b'), v -> {'a': {'b': v}}."""
  for key in reversed(path):
    value = {key: value}
  return value


def write(step_dir: str | os.PathLike, arrays: Iterator[tuple[tuple[str, ...], Any]], metadata: dict, *,
          compress: bool = False, chunk_bytes: int = 64 << 20) -> None:
  """Writes one checkpoint step from a stream of (tree path, array) pairs, then commits it atomically.

  step_dir: '<root>/<step>'. arrays: paths like ('params', 'layers', 'mlp', 'up_proj', 'kernel'); each
  array (numpy or jax.Array, possibly sharded) is written while the next one is produced (in a thread),
  so at most two arrays are alive at a time. Arrays are written as they are, without Orbax's defensive copy:
  an array must not be modified after it is yielded.
  metadata: JSON custom metadata (holds the config). A stale '<step>.partial_save' of an earlier
  interrupted run is removed first; if writing fails, the partial directory is removed again.
  compress: zstd-compress the chunks (Orbax's default). Off by default here: compressing holds one
    more copy of the array being written and is about 5x slower on CPU, for ~20% less disk on bf16.
  chunk_bytes: storage chunk size, so that restoring onto another mesh reads only the chunks it needs.
  """
  step_dir = pathlib.Path(step_dir)
  if step_dir.exists():
    raise FileExistsError(f"{step_dir} already exists; remove it or choose another output path")
  partial = step_dir.with_name(step_dir.name + PARTIAL_SUFFIX)
  shutil.rmtree(partial, ignore_errors=True)
  step_dir.parent.mkdir(parents=True, exist_ok=True)
  arrays = iter(arrays)
  context = ocp_v1.Context()
  context.array.saving.use_compression = compress
  context.array.saving.storage_options.chunk_byte_size = chunk_bytes
  # Orbax deep-copies every numpy array before writing it (a guard for asynchronous saves of arrays the caller
  # may still modify): one more full copy of the largest parameter, +594 MB at Dream's vocabulary (bf16). Our
  # saves are synchronous and the arrays are never modified after they are yielded, so no copy is needed.
  context.memory_options.deepcopy_host_arrays = False
  try:
    with context, concurrent.futures.ThreadPoolExecutor(1) as producer:  # reads ahead while writing
      upcoming = producer.submit(next, arrays, None)
      first = True
      while (item := upcoming.result()) is not None:
        upcoming = producer.submit(next, arrays, None)
        ocp_v1.partial.save(step_dir, nested(*item), custom_metadata=metadata if first else None)
        first = False
        del item
    ocp_v1.partial.finalize(step_dir)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


def resolve_step(path: str | os.PathLike) -> pathlib.Path:
  """Resolves a checkpoint root (latest committed step) or a step directory to the step directory."""
  path = pathlib.Path(path)
  if (path / STEP_METADATA).is_file():
    return path
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no such checkpoint directory")
  step = ocp.CheckpointManager(path.absolute()).latest_step()
  if step is None:
    partial = sorted(p.name for p in path.glob("*" + PARTIAL_SUFFIX))
    hint = f" (found unfinished {partial}: an interrupted conversion; rerun it)" if partial else ""
    raise FileNotFoundError(f"{path}: no complete checkpoint step{hint}")
  return path / str(step)


def read_metadata(path: str | os.PathLike) -> dict:
  """The custom metadata dict ({'config': .., 'hf_config': .., ...}) of a checkpoint."""
  step_metadata = ocp.metadata.metadata_store(enable_write=False).read(resolve_step(path) / STEP_METADATA)
  meta = (step_metadata or {}).get("custom_metadata") or {}
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: not an omnidiff_jax checkpoint (custom metadata format {meta.get('format')!r})")
  return meta


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The stored config (sections vocab and model)."""
  return ml_collections.ConfigDict(read_metadata(path)["config"])


def array_shapes(path: str | os.PathLike) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
  """{tree path: (shape, stored dtype)} for every array of the 'state' item, from metadata only."""
  tree = ocp.PyTreeCheckpointHandler().metadata(resolve_step(path).absolute() / STATE).tree
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(getattr(k, "key", getattr(k, "idx", None)) for k in keypath): (tuple(m.shape), np.dtype(m.dtype))
          for keypath, m in flat}


def restore(path: str | os.PathLike, target: dict, zero_pad: frozenset[tuple[str, ...]] = frozenset()) -> dict:
  """Restores the subtree `target` (nested dict of jax.ShapeDtypeStruct, with shardings or not).

  Leaves with a sharding come back as jax.Arrays placed accordingly; leaves without one as numpy
  arrays. Dtypes are cast to the target's. Arrays not named in `target` are not read. Sharded leaves at the
  tree paths in `zero_pad` may be stored smaller than the target: they are padded with zeros.
  """

  def args(key_path, leaf):
    if getattr(leaf, "sharding", None) is None:
      return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
    strict = tuple(k.key for k in key_path) not in zero_pad
    return ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype, strict=strict)

  restore_args = jax.tree_util.tree_map_with_path(args, target)
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(resolve_step(path).absolute() / STATE, args=ocp.args.PyTreeRestore(
        target, restore_args=restore_args, partial_restore=True))


def load_extra(path: str | os.PathLike, prefix: str = "") -> dict[str, np.ndarray]:
  """The carried-through Omni weights outside the backbone (SenseVoice encoder, audio projector) whose HF key
  starts with `prefix`, as {HF key: numpy array in its stored dtype}; {} when the checkpoint has none."""
  shapes = {p: s for p, s in array_shapes(path).items() if p[0] == "extra" and ".".join(p[1:]).startswith(prefix)}
  if not shapes:
    return {}
  target = {}
  for p, (shape, dtype) in shapes.items():
    node = target
    for key in p[:-1]:
      node = node.setdefault(key, {})
    node[p[-1]] = jax.ShapeDtypeStruct(shape, dtype)
  restored = restore(path, target)
  out = {}
  for p in shapes:
    node = restored
    for key in p:
      node = node[key]
    out[".".join(p[1:])] = np.asarray(node)
  return out


def abstract_model(model_cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None):
  """(graphdef, abstract nnx.Param state with a NamedSharding per leaf when `mesh` is given)."""
  build = lambda: DreamModel(model_cfg, rngs=nnx.Rngs(0))
  with nnx.use_eager_sharding(False):
    if mesh is None:
      return nnx.split(nnx.eval_shape(build))
    with sharding.use_mesh(mesh):
      graphdef, state = nnx.split(nnx.eval_shape(build))
      shardings = nnx.get_named_sharding(state, mesh)
  state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings)
  return graphdef, state


def _unpadded_vocab(path, model_cfg: ml_collections.ConfigDict, abstract: dict) -> frozenset[tuple[str, ...]]:
  """Tree paths of the vocabulary parameters stored with model.vocab_size rows (checkpoints written before
  the vocabulary padding); `load` zero-pads them to padded_vocab_size. Other shape mismatches still fail."""
  stored = array_shapes(path)
  out = set()
  for name in hf_names.backbone_names():
    key = ("params", *name.path)
    if name.vocab_axis is not None and key in stored and stored[key][0] != abstract[name.path].shape and \
        stored[key][0] == hf_names.unpadded_shape(name, abstract[name.path].shape, model_cfg.vocab_size):
      out.add(key)
  return frozenset(out)


def load(path: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
         dtype: str | None = None) -> tuple[DreamModel, ml_collections.ConfigDict]:
  """Loads a converted or trained checkpoint as a ready DreamModel.

  Args:
    path: a checkpoint root (its latest committed step is used), e.g. a training run's
      <workdir>/checkpoints, or one step directory. The model has an `audio_projection` when the stored
      model config has an audio_projector (converted Omni checkpoints, trained ones of the stage configs).
    mesh: device mesh to shard the parameters over (logical rules of omnidiff_jax.sharding); it may
      differ from the mesh (or device count) that saved. None puts everything on the default device.
    dtype: parameter dtype, e.g. 'bfloat16' (the backbone's and the audio projector's); None keeps the
      stored config's model.param_dtype. Orbax casts each shard on the host as it is read, so a training
      checkpoint's f32 weights never sit on the devices in f32.
  Returns:
    (model, config): config is the stored ml_collections config (sections vocab and model), with
    model.param_dtype (and model.audio_projector.param_dtype) updated when `dtype` is given.
  """
  cfg = read_config(path)
  if dtype is not None:
    cfg.model.param_dtype = jax.numpy.dtype(dtype).name
    if cfg.model.get("audio_projector") is not None:
      cfg.model.audio_projector.param_dtype = cfg.model.param_dtype
  graphdef, abstract = abstract_model(cfg.model, mesh)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
  target = {"params": nnx.to_pure_dict(abstract)}
  params = restore(path, target, zero_pad=_unpadded_vocab(path, cfg.model, dict(nnx.to_flat_state(abstract))))
  params = params["params"]
  nnx.replace_by_pure_dict(abstract, params)
  return nnx.merge(graphdef, abstract), cfg
