"""Training sections added to a model config (configs/stage{1,2,3}.py build on these).

  train:       steps, global_rows (packed rows per optimizer step, all processes), seq_len,
               grad_accum_steps, seed, init_from (checkpoint dir whose final state initialises the params)
  optimizer:   AdamW + warmup/cosine schedule, clipping, frozen parameter regexes, NaN/Inf guard
  loss:        masked-diffusion objective switches (see omnidiff_jax.training.loss)
  data:        source ('synthetic' or 'mixture': omnidiff_jax.data.pipeline), mixture {task: weight}, lengths;
               feature_rows (user-speech feature rows per packed row; 0: the batches carry no speech, as
               the synthetic source) and feature_dim (their width, = model.audio_projector.input_size)
  checkpoint:  Orbax manager settings (save_every steps, keep the last k, async)
  metrics:     console/TensorBoard logging, peak TFLOP/s per device for MFU (0: look it up by device kind)
  eval:        every (steps; 0 = off) and config (an eval config file[:arg], configs/eval/*.py): the small
               named eval set tools/train.py runs through omnidiff_jax.eval (loop.train's eval_hook)
  distributed: jax.distributed settings; empty coordinator_address means auto-detect from the
               environment (TPU pods, SLURM, ...) or single process
"""
from __future__ import annotations

import ml_collections


def add_training_sections(cfg: ml_collections.ConfigDict, *, stage: str, learning_rate: float,
                          mixture: dict[str, float], steps: int, global_rows: int, seq_len: int,
                          warmup_steps: int) -> ml_collections.ConfigDict:
  cfg.stage = stage
  cfg.train = ml_collections.ConfigDict(dict(
      steps=steps, global_rows=global_rows, seq_len=seq_len, grad_accum_steps=1, seed=956, init_from=""))
  cfg.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, warmup_steps=warmup_steps, final_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.0, grad_clip_norm=1.0,
      # Upstream's DeepSpeed setup (omnidiff_jax.training.optimizer): DeepSpeed's WarmupCosineLR with its default
      # log-shaped warm-up, and micro-batch mean-loss gradients summed over gradient accumulation.
      warmup_shape="log", grad_accum_reduction="sum",
      # Regexes over parameter paths ('embed_tokens/embedding', 'layers/mlp/up_proj/kernel',
      # 'audio_projection/linear_1/kernel', ...). Upstream trains the projector and the whole LLM and freezes
      # the SenseVoice encoder, which is not part of the train state at all: the data pipeline stores its
      # outputs (omnidiff_jax.data.encode), so only the projector runs in the step.
      frozen=[],
      # NaN/Inf guard: skipped updates in a row before training stops (the last good checkpoint stays).
      max_nonfinite_steps=5))
  cfg.loss = ml_collections.ConfigDict(dict(
      noise="per_token", inverse_t_weighting=False, reduction="row_mean", eps=1e-3, pad_mask_ratio=0.6))
  cfg.data = ml_collections.ConfigDict(dict(
      source="synthetic", seed=0, mixture=mixture, min_len=8, max_len=64, num_batches=10**9, feature_rows=0,
      feature_dim=512))
  cfg.checkpoint = ml_collections.ConfigDict(dict(save_every=500, keep=3, async_save=True))
  cfg.metrics = ml_collections.ConfigDict(dict(log_every=10, peak_tflops_per_device=0.0, tensorboard=True))
  cfg.eval = ml_collections.ConfigDict(dict(every=0, config=""))
  cfg.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0, cpu_collectives="gloo"))
  return cfg
