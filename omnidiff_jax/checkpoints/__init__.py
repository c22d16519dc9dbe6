"""Checkpoint conversion (HF safetensors <-> our parameter tree) and Orbax I/O."""
