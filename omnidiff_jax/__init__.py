"""omnidiff_jax: a JAX/Flax NNX reimplementation of Omni-Diffusion (masked discrete diffusion, any-to-any)."""
__version__ = "0.1.0"
