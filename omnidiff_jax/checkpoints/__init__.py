"""Checkpoint conversion (HF safetensors <-> our parameter tree) and Orbax I/O.

  model, config = omnidiff_jax.checkpoints.load(path, mesh=None, dtype=None)

loads a checkpoint written by tools/convert_checkpoint.py (or by training) onto any mesh; see
orbax_io.load. `load_extra(path)` returns the carried-through Omni weights (the frozen SenseVoice
encoder) by HF name; the audio projector is part of the model (params/audio_projection). The conversions
themselves live in convert.py.
"""
from omnidiff_jax.checkpoints.orbax_io import load, load_extra
from omnidiff_jax.checkpoints.safetensors_io import CheckpointError

__all__ = ["CheckpointError", "load", "load_extra"]
