"""Checkpoint conversion (HF safetensors <-> our parameter tree) and Orbax I/O.

  model, config = omnidiff_jax.checkpoints.load(path, mesh=None, dtype=None)

loads a checkpoint written by tools/convert_checkpoint.py (or by training) onto any mesh; see
orbax_io.load. The conversions themselves live in convert.py.
"""
from omnidiff_jax.checkpoints.orbax_io import load  # noqa: F401
from omnidiff_jax.checkpoints.safetensors_io import CheckpointError  # noqa: F401
