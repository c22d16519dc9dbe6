"""Device mesh, logical axis rules and sharded model creation.

The mesh has three axes, (data, fsdp, tensor), all of AxisType.Auto so that XLA's SPMD partitioner
propagates shardings from the parameter annotations and the activation constraints. Parameters and
activations are annotated with logical axis names; LOGICAL_RULES maps them onto mesh axes (MaxText style).
Pure FSDP is the default at 7B (fsdp=-1); tensor parallelism splits heads, the MLP and the vocabulary.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh

from omnidiff_jax.models.dream.modeling import DreamModel

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES = (
    # Parameters.
    ("layers", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 entry of (data, fsdp, tensor) so that the product equals num_devices."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"but {num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  try:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  except NotImplementedError:  # an axis is no product of physical torus axes (tensor=2 on a 16x16 v6e slice)
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=axis_types)


@contextlib.contextmanager
def use_mesh(mesh: Mesh) -> Iterator[Mesh]:
  """Makes `mesh` current and activates the logical axis rules (needed while tracing the model)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_RULES):
    yield mesh


def params_mesh(state) -> Mesh | None:
  """The mesh the arrays of `state` (any pytree, e.g. a model's nnx.State) are sharded over; None when they
  live on single devices. Raises ValueError when they are placed over different meshes."""
  meshes = {leaf.sharding.mesh for leaf in jax.tree.leaves(state)
            if isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)}
  meshes = {m for m in meshes if m.size > 1}
  if len(meshes) > 1:
    raise ValueError(f"the parameters are sharded over {len(meshes)} different meshes; place them on one "
                     f"(checkpoints.load(..., mesh=) or sharding.create_model(..., mesh))")
  return meshes.pop() if meshes else None


def inference_mesh_shape(model_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Default (data, fsdp, tensor) for sampling: tensor parallel over as many devices as divide both the device
  count and model.num_heads (8 devices and 28 heads: tensor=4), the rest FSDP.

  Tensor parallelism splits every matmul without gathering weights at each step; capping it at a divisor of
  the query heads keeps heads whole (kv heads are replicated when tensor > num_kv_heads, see
  models.dream.modeling.kv_heads_axis).
  """
  tensor = max(t for t in range(1, num_devices + 1) if num_devices % t == 0 and model_cfg.num_heads % t == 0)
  return 1, num_devices // tensor, tensor


def create_model(model_cfg: ml_collections.ConfigDict, mesh: Mesh | None = None, seed: int = 0) -> DreamModel:
  """Builds a randomly initialised DreamModel, sharded over `mesh` when given.

  Initialisation runs inside one jit whose outputs carry the target shardings, so every device only
  materialises its own shards: no full replica is ever built on one host.
  """
  def build() -> DreamModel:
    return DreamModel(model_cfg, rngs=nnx.Rngs(seed))

  # Shardings are applied through the jit's out_shardings, from the logical annotations, not eagerly.
  with nnx.use_eager_sharding(False):
    if mesh is None:
      return nnx.jit(build)()
    with use_mesh(mesh):
      graphdef, abstract_state = nnx.split(nnx.eval_shape(build))
      shardings = nnx.get_named_sharding(abstract_state, mesh)
      state = jax.jit(lambda: nnx.state(build()), out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def partition_specs(model: nnx.Module) -> dict[str, str]:
  """{'layers/mlp/up_proj/kernel': "PartitionSpec(None, 'fsdp', 'tensor')", ...} for every parameter."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  out = {}
  for path, var in flat:
    spec = getattr(var.get_value().sharding, "spec", None)
    out["/".join(str(p) for p in path)] = str(tuple(spec) if spec is not None else ())
  return out


def sharding_table(model: nnx.Module) -> str:
  """One line per parameter: path, shape, dtype, PartitionSpec and per-device shard shape."""
  rows = []
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    arr = var.get_value()
    spec = getattr(arr.sharding, "spec", ())
    shard = arr.sharding.shard_shape(arr.shape)
    rows.append(("/".join(str(p) for p in path), str(arr.shape), str(arr.dtype), str(tuple(spec)), str(shard)))
  header = ("parameter", "shape", "dtype", "spec", "shard")
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
  fmt = "  ".join("{:<%d}" % w for w in widths)
  return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])


def param_count(model: nnx.Module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
