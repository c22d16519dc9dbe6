"""Ahead-of-time compiles of the real train step and sampler for a target (omnidiff_jax.aot.targets) from
abstract sharded state, and their report: compile time, memory per device against usable HBM, FLOPs and
bytes with loop trip counts (omnidiff_jax.aot.hlo_cost), roofline time and the MFU bound it implies.

  roofline time per device = max(HLO FLOPs / peak FLOP/s, HLO bytes / HBM bandwidth)
  MFU bound                = model FLOPs per device (omnidiff_jax.flops) / (peak FLOP/s x roofline time)

Collectives are not in the roofline (no interconnect model). The HBM bytes count every top-level operation's
operands and outputs (no on-chip reuse), an upper estimate: a memory-bound verdict is pessimistic, and
mfu_bound_compute_only (model FLOPs / executed FLOPs) is the bound when compute dominates.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from omnidiff_jax import flops, sharding
from omnidiff_jax.aot import hlo_cost, targets
from omnidiff_jax.checkpoints import orbax_io
from omnidiff_jax.config import padded_vocab_size
from omnidiff_jax.sampling import sampler
from omnidiff_jax.sampling.schedule import SamplerConfig, make_plan
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import train_step
from omnidiff_jax.vocab import VocabLayout

GIB = targets.GIB


def compile_train_step(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> tuple[Any, Any, float]:
  """(compiled step, trainer, compile seconds) for stage config `cfg` on `mesh` (any devices)."""
  trainer = train_step.make_trainer(cfg, mesh)
  batch = batchlib.abstract_batch(mesh, cfg.data, cfg.train.global_rows, cfg.train.seq_len)
  start = time.perf_counter()
  compiled = trainer.lower(trainer.abstract_state, batch).compile()
  return compiled, trainer, time.perf_counter() - start


def train_model_flops(cfg: ml_collections.ConfigDict, num_devices: int) -> float:
  """Model FLOPs of one optimizer step per device (omnidiff_jax.flops, forward + backward, no remat)."""
  tokens = cfg.train.global_rows * cfg.train.seq_len
  return flops.flops_per_token(cfg.model, cfg.train.seq_len) * tokens / num_devices


def sampler_inputs(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, batch: int, prompt_len: int,
                   region_len: int) -> tuple[Any, Any, sampler.Rows, jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
  """(graphdef, abstract sharded params, abstract Rows, region, key) of a batch of left-padded prompts."""
  graphdef, state = orbax_io.abstract_model(cfg.model, mesh)
  rows_spec = PartitionSpec(batchlib.BATCH_AXES) if batch % math.prod(
      mesh.shape[a] for a in batchlib.BATCH_AXES) == 0 else PartitionSpec()
  on_rows = NamedSharding(mesh, rows_spec)
  length = prompt_len + region_len
  struct = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=on_rows)
  rows = sampler.Rows(base_embeds=struct((batch, length, cfg.model.hidden_size), jnp.dtype(cfg.model.dtype)),
                      region_start=struct((batch,), jnp.int32), positions=struct((batch, length), jnp.int32),
                      segment_ids=struct((batch, length), jnp.int32))
  key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                             sharding=NamedSharding(mesh, PartitionSpec()))
  return graphdef, state, rows, struct((batch, region_len), jnp.int32), key


def compile_sampler(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, sampler_cfg: SamplerConfig,
                    batch: int, prompt_len: int, region_len: int) -> tuple[Any, float]:
  """(compiled sampler loop, compile seconds): sampling.sampler's jitted loop for the config's model."""
  graphdef, state, rows, region, key = sampler_inputs(cfg, mesh, batch, prompt_len, region_len)
  specials = sampler.Specials.for_model(cfg.model, VocabLayout.from_config(cfg.vocab).mask_id)
  start = time.perf_counter()
  with sharding.use_mesh(mesh):
    compiled = sampler._run.lower(graphdef, state, rows, region, key, cfg=sampler_cfg, specials=specials).compile()
  return compiled, time.perf_counter() - start


def sampler_model_flops(cfg: ml_collections.ConfigDict, batch: int, length: int, window: int,
                        num_devices: int) -> float:
  """Model FLOPs of one full-row sampler step per device: the forward over the row, lm_head (padded logit
  width) on the window."""
  c = cfg.model
  lm_head = 2 * c.hidden_size * padded_vocab_size(c)
  body = flops.flops_per_token(c, length, training=False) - lm_head
  return (body * batch * length + lm_head * batch * window) / num_devices


def cost_fields(cost: hlo_cost.Cost, chip: targets.Chip, model_flops: float) -> dict:
  """HLO FLOPs and bytes with loop trip counts, roofline ms and the MFU bounds (per device) of a compiled
  module's cost (`hlo_cost.analyze` of its text; `recost` applies it to a saved `--hlo_out` file)."""
  compute_s, memory_s = cost.flops / chip.peak_flops, cost.bytes / chip.hbm_bandwidth
  roofline_s = max(compute_s, memory_s)
  return dict(
      hlo_flops=cost.flops, hlo_bytes=cost.bytes, loop_trip_counts=sorted(cost.trip_counts.values()),
      model_flops=model_flops, roofline_ms=roofline_s * 1e3, compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3,
      bound="compute" if compute_s >= memory_s else "memory",
      mfu_bound=model_flops / (chip.peak_flops * roofline_s) if roofline_s else 0.0,
      mfu_bound_compute_only=model_flops / cost.flops if cost.flops else 0.0)


def report(compiled, chip: targets.Chip, model_flops: float, compile_seconds: float,
           entry_loop_trips: int | None = None) -> dict:
  """Memory, cost, roofline and verdict of a compiled executable (all per device)."""
  mem = compiled.memory_analysis()
  # Donated arguments alias outputs: the live peak is arguments + outputs not aliased + temporaries.
  used = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
  cost = hlo_cost.analyze(compiled.as_text(), entry_loop_trips, chip.on_chip_memory_spaces)
  xla_cost = compiled.cost_analysis() or {}
  headroom = 1.0 - used / chip.usable_hbm_bytes
  fits = used <= chip.usable_hbm_bytes
  return dict(
      chip=chip.name, compile_seconds=round(compile_seconds, 1),
      memory_gib=dict(arguments=mem.argument_size_in_bytes / GIB, outputs=mem.output_size_in_bytes / GIB,
                      aliased=mem.alias_size_in_bytes / GIB, temporaries=mem.temp_size_in_bytes / GIB,
                      total=used / GIB, usable_hbm=chip.usable_hbm_bytes / GIB),
      xla_cost_analysis=dict(flops=float(xla_cost.get("flops", 0.0)),
                             bytes_accessed=float(xla_cost.get("bytes accessed", 0.0)),
                             hlo_flops_loops_once=cost.flops_once, hlo_bytes_loops_once=cost.bytes_once),
      **cost_fields(cost, chip, model_flops),
      hbm_headroom=headroom,
      verdict=(f"fits: {used / GIB:.2f} of {chip.usable_hbm_bytes / GIB:.2f} GiB per device "
               f"({headroom:.0%} headroom)") if fits else
              (f"does not fit: {used / GIB:.2f} GiB per device, {(used - chip.usable_hbm_bytes) / GIB:.2f} GiB "
               f"over the usable {chip.usable_hbm_bytes / GIB:.2f} GiB"))


def recost(result: dict, hlo_text: str) -> dict:
  """A tools/aot_compile.py result with its cost fields recomputed from the module's saved HLO text (the cost
  rules of this hlo_cost); memory and verdict are the compiler's and stay."""
  chip = next(c for c in targets.CHIPS.values() if c.name == result["chip"])
  cost = hlo_cost.analyze(hlo_text, None if result["what"] == "train_step" else 1, chip.on_chip_memory_spaces)
  xla = dict(result["xla_cost_analysis"], hlo_flops_loops_once=cost.flops_once, hlo_bytes_loops_once=cost.bytes_once)
  return dict(result, **cost_fields(cost, chip, result["model_flops"]), xla_cost_analysis=xla)


# Replicated on purpose: the speech-input projector is small and has no sharding annotations (DreamModel).
REPLICATED_BY_DESIGN = ("audio_projection",)


def replicated_leaves(shardings, abstract) -> list[str]:
  """Paths of matmul weights ('kernel', 'embedding'; and their Adam moments) replicated on every device of a
  mesh with more than one device: a sharding rule that never applied. Norm scales and biases are vectors the
  rules leave replicated over fsdp; REPLICATED_BY_DESIGN is skipped."""
  out = []
  for (path, s), a in zip(jax.tree_util.tree_flatten_with_path(shardings)[0], jax.tree.leaves(abstract)):
    name = jax.tree_util.keystr(path)
    if any(k in name for k in REPLICATED_BY_DESIGN) or not any(k in name for k in ("kernel", "embedding")):
      continue
    if a.ndim >= 2 and s.num_devices > 1 and s.is_fully_replicated:
      out.append(name)
  return out


def sharded_argument_bytes(abstract) -> int:
  """Per-device bytes of a pytree of ShapeDtypeStructs with shardings (their shard shapes)."""
  return sum(math.prod(a.sharding.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
             for a in jax.tree.leaves(abstract))


def out_of_memory_report(error: Exception, chip: targets.Chip, compile_seconds: float) -> dict | None:
  """The report of a compile that failed with XLA's CompileTimeHbmOom (None for any other error)."""
  found = re.search(r"CompileTimeHbmOom.*?\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", str(error))
  if "CompileTimeHbmOom" not in str(error):
    return None
  needed = float(found.group(1)) if found else float("nan")
  return dict(chip=chip.name, compile_seconds=round(compile_seconds, 1), memory_gib=dict(total=needed,
              usable_hbm=chip.usable_hbm_bytes / GIB), mfu_bound=0.0, roofline_ms=float("nan"), bound="",
              verdict=f"does not fit: XLA needs {needed:.2f} GiB of temporaries alone, over the "
                      f"{chip.usable_hbm_bytes / GIB:.2f} GiB usable ({str(error).splitlines()[0][:200]})")


def train_report(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, chip: targets.Chip) -> tuple[dict, Any]:
  """(report, compiled or None when out of HBM) of the stage config's train step."""
  start = time.perf_counter()
  try:
    compiled, trainer, seconds = compile_train_step(cfg, mesh)
  except jax.errors.JaxRuntimeError as e:
    result = out_of_memory_report(e, chip, time.perf_counter() - start)
    if result is None:
      raise
    compiled, trainer = None, train_step.make_trainer(cfg, mesh)
  else:
    result = report(compiled, chip, train_model_flops(cfg, mesh.size), seconds)
  result.update(what="train_step", mesh=dict(mesh.shape), global_rows=cfg.train.global_rows,
                rows_per_device=cfg.train.global_rows / mesh.size, seq_len=cfg.train.seq_len,
                grad_accum_steps=cfg.train.grad_accum_steps, remat=cfg.model.remat_policy,
                attention=cfg.model.attention_impl, param_dtype=cfg.model.param_dtype, dtype=cfg.model.dtype,
                speech_feature_rows=batchlib.feature_rows(cfg.data),
                replicated_state=replicated_leaves(trainer.shardings, trainer.abstract_state),
                state_gib_per_device=sharded_argument_bytes(trainer.abstract_state) / GIB,
                mosaic_kernels=compiled.as_text().count('custom_call_target="tpu_custom_call"') if compiled else 0)
  return result, compiled


def sampler_report(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, chip: targets.Chip,
                   sampler_cfg: SamplerConfig, batch: int, prompt_len: int, region_len: int) -> tuple[dict, Any]:
  """Per-step figures: the loop's data-dependent while counts once (both KV-cache branches counted); compiled
  is None when out of HBM."""
  start = time.perf_counter()
  try:
    compiled, seconds = compile_sampler(cfg, mesh, sampler_cfg, batch, prompt_len, region_len)
  except jax.errors.JaxRuntimeError as e:
    result, compiled = out_of_memory_report(e, chip, time.perf_counter() - start), None
    if result is None:
      raise
  else:
    window = make_plan(sampler_cfg, region_len).window
    result = report(compiled, chip, sampler_model_flops(cfg, batch, prompt_len + region_len, window, mesh.size),
                    seconds, entry_loop_trips=1)
  graphdef, state, *_ = sampler_inputs(cfg, mesh, batch, prompt_len, region_len)
  del graphdef
  shardings = jax.tree.map(lambda a: a.sharding, state)
  result.update(what="sampler_kv_cache" if sampler_cfg.kv_cache else "sampler_exact", mesh=dict(mesh.shape),
                batch=batch, prompt_len=prompt_len, region_len=region_len, steps=sampler_cfg.steps,
                attention=cfg.model.attention_impl, param_dtype=cfg.model.param_dtype, dtype=cfg.model.dtype,
                replicated_params=replicated_leaves(shardings, state),
                params_gib_per_device=sharded_argument_bytes(state) / GIB,
                mosaic_kernels=compiled.as_text().count('custom_call_target="tpu_custom_call"') if compiled else 0,
                note="per sampler step: roofline_ms and flops are one iteration of the denoising loop")
  return result, compiled

