"""Batched, length-bucketed, mesh-sharded sampling of many prompts, each row with its own region length.

Each request is one prompt with its own SamplerConfig and region length (e.g. asr_eval: int(0.2 * its prompt
length), tts_eval: int(3.5 * its text tokens), steps half of that), as upstream computes them at batch 1.
Requests sharing (SamplerConfig, region length) and the same padded prompt length (rounded up to
`prompt_bucket`) form a bucket: one compile per bucket, batches of `batch_size` rows left-padded to the bucket's
prompt length. The batch is placed on the mesh sharded over its data axis (every process builds the same
global batch and hands each device its rows, so this works across hosts), and the filled regions are gathered
back to every process (process_allgather); the caller writes them on process 0. A short last batch is padded
with copies of its last row, whose results are dropped.

What batching changes, and what it does not (tests/test_eval_generate.py; bench/RESULTS.md, "Eval generation"):
  - Position ids count real tokens only (sampler.build_rows) and padding is never a key, so a left-padded row sees
    the same inputs as alone, whatever its batch mates.
  - Randomness (temperature > 0, alg_temp > 0, alg 'origin') comes from the row's own key, jax.random.key(
    Request.seed), which generate_samples derives from the eval seed and the sample id: a sample draws the same
    numbers in any batch, bucket, shard or host layout, and as a batch-1 api.generate(seed=Request.seed) run.
  - Float rounding is not batch-invariant: the padded length (reductions over more, masked, keys) and the batch
    size (XLA's blocking of the matmuls) change the order of float sums, so logits differ from the unpadded
    batch-1 run's by up to ~5e-7 (tiny config, float32). Where two candidates are closer than that (argmax
    tokens, the entropy confidences that order the reveals, the top-p cutoff), the choice can flip and the rest
    of the sample follows it: a random model's near-uniform distributions do this often, a trained model's
    rarely.
  - mode='upstream' ranks the reveals over the whole batch (as upstream, which runs batch 1): rows would change
    each other's tokens, so runner.check_config allows it only with batch_size 1.

generate_samples() is the step before: an evaluator's samples -> its preset's prompts (sampling.inputs) -> one
Request per sample with the preset's rules on its own lengths and the sweep setting (request_config).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from omnidiff_jax import sharding
from omnidiff_jax.sampling import api, inputs, presets, sampler
from omnidiff_jax.sampling.schedule import SamplerConfig
from omnidiff_jax.vocab import VocabLayout

_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")


class CompileClock:
  """Seconds JAX spends tracing, lowering and compiling (jax.monitoring events), accumulated while installed."""
  _instances: list["CompileClock"] = []
  _registered = False

  def __init__(self):
    self.seconds = 0.0

  def __enter__(self) -> "CompileClock":
    if not CompileClock._registered:
      jax.monitoring.register_event_duration_secs_listener(CompileClock._listen)
      CompileClock._registered = True
    CompileClock._instances.append(self)
    return self

  def __exit__(self, *exc) -> None:
    CompileClock._instances.remove(self)

  @staticmethod
  def _listen(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
      for clock in CompileClock._instances:
        clock.seconds += duration


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt. ids: (P,) int32 prompt ids; features / slots: (S, D) projected speech features and their (S,)
  positions in ids (None / () without speech); uncond: (Pu,) CFG unconditional ids or None; cfg and region_len:
  this row's sampler settings and region length; seed: its random stream, jax.random.key(seed) (sample_seed)."""
  ids: np.ndarray
  cfg: SamplerConfig
  region_len: int
  seed: int = 0
  features: np.ndarray | None = None
  slots: Sequence[int] = ()
  uncond: np.ndarray | None = None


@dataclasses.dataclass
class Stats:
  """Totals of one generate() call: compiled buckets (new traces), model batches, region tokens, seconds."""
  buckets: int = 0
  batches: int = 0
  region_tokens: int = 0
  sampler_seconds: float = 0.0
  compile_seconds: float = 0.0


def sample_seed(seed: int, sample_id: str) -> int:
  """A sample's own seed (31 bits) from the eval seed and its id: its random stream whatever its batch."""
  digest = hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=4).digest()
  return int.from_bytes(digest, "little") >> 1


def bucket_length(length: int, granularity: int) -> int:
  return int(math.ceil(length / granularity) * granularity)


def _put(mesh, array: np.ndarray) -> jax.Array:
  """A global array whose leading (batch) axis is split over the mesh's data axis (every process holds `array`)."""
  spec = PartitionSpec("data", *([None] * (array.ndim - 1)))
  named = NamedSharding(mesh, spec)
  return jax.make_array_from_callback(array.shape, named, lambda index: array[index])


def _batch_rows(model, vocab: VocabLayout, batch: list[Request], prompt_len: int):
  """sampler.Rows and the initial region (B, G) of one bucket batch, prompts left-padded to prompt_len."""
  cfg, region_len = batch[0].cfg, batch[0].region_len
  embeds, mask = api.embed_prompts(model, [r.ids for r in batch], vocab.pad_id, [r.features for r in batch],
                                   [r.slots for r in batch])
  pad = prompt_len - embeds.shape[1]
  embeds = jnp.pad(embeds, ((0, 0), (pad, 0), (0, 0)))
  mask = np.pad(mask, ((0, 0), (pad, 0)))
  uncond_embeds = uncond_mask = None
  if cfg.cfg_scale > 0:
    if any(r.uncond is None for r in batch):
      raise ValueError("cfg_scale > 0 needs an unconditional prompt for every row (the task has none: set "
                       "cfg_scale=0 for it)")
    uncond_ids, uncond_mask = api.left_pad([r.uncond for r in batch], vocab.pad_id)
    uncond_embeds = model.embed(jnp.asarray(uncond_ids))
  rows = sampler.build_rows(model, embeds, mask, region_len, cfg, uncond_embeds, uncond_mask)
  region = api.initial_region(len(batch), region_len, vocab.mask_id)
  if cfg.boa_fraction is not None:
    region = api.prefill_boa(region, cfg.boa_fraction, vocab.special_id("<|begin_of_audio|>"), vocab.mask_id)
  return rows, region


def buckets(requests: Sequence[Request], prompt_bucket: int) -> dict[tuple, list[int]]:
  """{(cfg, region_len, padded prompt length): request indices in order}, in first-seen order."""
  groups: dict[tuple, list[int]] = collections.OrderedDict()
  for index, request in enumerate(requests):
    key = (request.cfg, request.region_len, bucket_length(len(request.ids), prompt_bucket))
    groups.setdefault(key, []).append(index)
  return groups


def generate(model, vocab: VocabLayout, mesh, requests: Sequence[Request], *, batch_size: int, prompt_bucket: int,
             progress=None) -> tuple[list[np.ndarray], list[float], Stats]:
  """Fills every request's region. batch_size: global rows per model batch (a multiple of the mesh's data axis).

  Returns the tokens (G_i,) of each request in order, the sampler seconds per request (its batch's wall time
  shared over the batch's real rows) and the Stats. progress: a tqdm bar advanced by finished requests.
  """
  data = mesh.shape["data"]
  if batch_size % data:
    raise ValueError(f"batch_size {batch_size} must be a multiple of the mesh's data axis ({data})")
  specials = sampler.Specials.for_model(model.cfg, vocab.mask_id)
  tokens: list[np.ndarray | None] = [None] * len(requests)
  seconds = [0.0] * len(requests)
  stats = Stats()
  traces = sampler.trace_count()
  with CompileClock() as clock, sharding.use_mesh(mesh):
    for (cfg, region_len, prompt_len), indices in buckets(requests, prompt_bucket).items():
      for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        batch = [requests[i] for i in chunk]
        batch += [batch[-1]] * (batch_size - len(batch))
        began = time.perf_counter()
        rows, region = _batch_rows(model, vocab, batch, prompt_len)
        rows = jax.tree.map(lambda a: _put(mesh, np.asarray(a)), rows)
        keys = jax.vmap(jax.random.key)(jnp.asarray([r.seed for r in batch], jnp.uint32))  # (B,): one per row
        result = sampler.run(model, cfg, rows, _put(mesh, region), keys, specials)
        filled = np.asarray(multihost_utils.process_allgather(result.tokens, tiled=True))
        elapsed = time.perf_counter() - began
        for row, index in enumerate(chunk):
          tokens[index], seconds[index] = filled[row], elapsed / len(chunk)
        stats.batches += 1
        stats.region_tokens += region_len * len(chunk)
        stats.sampler_seconds += elapsed
        if progress is not None:
          progress.update(len(chunk))
    stats.compile_seconds = clock.seconds
  stats.buckets = sampler.trace_count() - traces
  return tokens, seconds, stats


def request_config(preset: str, prompt_len: int, text_len: int | None, setting: dict
                   ) -> tuple[SamplerConfig, int]:
  """A row's SamplerConfig and region length: the preset's rules on its own lengths, then the setting."""
  overrides = {k: v for k, v in setting.items() if k not in ("name", "steps_fraction")}
  cfg, region_len = presets.task_config(preset, prompt_len, text_len, **overrides)
  if "steps_fraction" in setting:
    cfg = dataclasses.replace(cfg, steps=max(int(setting["steps_fraction"] * region_len), 1))
  return cfg, region_len


def _build(evaluator, ctx, samples: Sequence, setting: dict, image_resolution) -> list[Request]:
  prompt_inputs = evaluator.prompt_inputs(samples)
  prompts = inputs.build_prompts(
      evaluator.preset, ctx.vocab, ctx.tokenizer, **prompt_inputs,
      image_tokenizer=ctx.image_tokenizer if "images" in prompt_inputs else None,
      speech_encoder=ctx.speech_encoder if "wavs" in prompt_inputs else None,
      image_resolution=image_resolution, cfg_scale=setting.get("cfg_scale"), as_trained=evaluator.prompts_as_trained)
  requests = []
  for row, sample in enumerate(samples):
    text = sample.inputs.get("text") if "texts" in prompt_inputs else None
    text_len = len(ctx.tokenizer.encode(text, add_special_tokens=False).ids) if text else None
    cfg, region_len = request_config(evaluator.preset, len(prompts.ids[row]), text_len, setting)
    requests.append(Request(ids=prompts.ids[row], cfg=cfg, region_len=region_len, features=prompts.features[row],
                            slots=prompts.audio_slots[row], uncond=prompts.uncond))
  return requests


def build_requests(evaluator, ctx, samples: Sequence, setting: dict,
                   image_resolution: int | None) -> tuple[list[Request | None], list[str | None]]:
  """One Request per sample (None where its prompt failed) and the errors. The shard is built in one go (batched
  media encoding); if that fails, sample by sample, so that one bad file fails only its sample."""
  try:
    return _build(evaluator, ctx, samples, setting, image_resolution), [None] * len(samples)
  except (ValueError, FileNotFoundError, OSError) as whole_error:
    if len(samples) == 1:
      return [None], [f"{type(whole_error).__name__}: {whole_error}"]
  requests, errors = [], []
  for sample in samples:
    request, error = build_requests(evaluator, ctx, [sample], setting, image_resolution)
    requests += request
    errors += error
  return requests, errors


def generate_samples(evaluator, ctx, mesh, samples: Sequence, setting: dict, run_cfg, progress=None
                     ) -> tuple[list[Request | None], list[str | None], dict[int, tuple[np.ndarray, float]], Stats]:
  """An evaluator's samples -> its preset's prompts with `setting` -> filled regions; every process takes part.

  evaluator: an eval.evaluators.Evaluator (its preset and prompt_inputs), ctx: its Context (model, vocab,
  tokenizer, media networks); run_cfg: the eval config (batch_size, prompt_bucket, seed, image_resolution); each
  row's random stream is sample_seed(run_cfg.seed, its sample id).
  Returns the requests (None where the prompt failed), the errors (None where it did not), {sample index:
  (tokens (G_i,), sampler seconds)} of the samples that were sampled, and the Stats.
  """
  requests, errors = build_requests(evaluator, ctx, samples, setting, run_cfg.image_resolution or None)
  requests = [request and dataclasses.replace(request, seed=sample_seed(run_cfg.seed, sample.id))
              for request, sample in zip(requests, samples)]
  valid = [i for i, r in enumerate(requests) if r is not None]
  if progress is not None:
    progress.update(len(samples) - len(valid))
  tokens, seconds, stats = generate(ctx.model, ctx.vocab, mesh, [requests[i] for i in valid],
                                    batch_size=run_cfg.batch_size, prompt_bucket=run_cfg.prompt_bucket,
                                    progress=progress)
  return requests, errors, dict(zip(valid, zip(tokens, seconds))), stats
