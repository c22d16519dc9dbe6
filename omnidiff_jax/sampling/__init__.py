"""Masked-diffusion sampling: the jitted denoising loop, its settings and the Python API."""
from omnidiff_jax.models.speech_in.adapter import splice_features
from omnidiff_jax.sampling.api import embed_prompts, generate, initial_region, left_pad, prefill_boa
from omnidiff_jax.sampling.inputs import TASK_INPUTS, build_prompts, generate_from_inputs
from omnidiff_jax.sampling.presets import PRESETS, generate_task, split_outputs, task_config
from omnidiff_jax.sampling.sampler import SampleResult, trace_count
from omnidiff_jax.sampling.schedule import ALGORITHMS, SamplerConfig, linspace_timesteps, make_plan

__all__ = ["ALGORITHMS", "PRESETS", "SampleResult", "SamplerConfig", "TASK_INPUTS", "build_prompts", "embed_prompts",
           "generate", "generate_from_inputs", "generate_task", "initial_region", "left_pad", "linspace_timesteps",
           "make_plan", "prefill_boa", "splice_features", "split_outputs", "task_config", "trace_count"]
