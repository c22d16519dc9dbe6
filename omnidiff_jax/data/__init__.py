"""Data pipelines. Every source follows the batch contract in omnidiff_jax.training.batch."""
