"""The jitted denoising loop: every step of every block runs inside one compiled lax.while_loop.

Layout of a model row (length L = P + G): the prompt (left padded to P) then the generation region (G
positions; mask ids where tokens are to be generated, any other id is kept fixed: inpainting). With CFG the
model batch holds the B conditional rows followed by B unconditional rows. Each step scores only the active
window of the region (the block, or the whole region) with Dream's shift: region index g is predicted by the
model output at row index P + g - 1.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidiff_jax import sharding
from omnidiff_jax.config import padded_vocab_size
from omnidiff_jax.sampling import logits as logits_lib
from omnidiff_jax.sampling.schedule import Plan, SamplerConfig, make_plan, reveals_outside_block, topk_tie_rank

Array = jax.Array
_TRACES = [0]
_RECORDINGS: list[list] = []  # the lists of the active recording() contexts, innermost last
KERNEL_BLOCK = 128  # with attention_impl 'splash', rows are padded to a multiple of the kernel's smallest block


def trace_count() -> int:
  """How many times the loop has been traced (compiled) in this process; for tests and benchmarks."""
  return _TRACES[0]


@contextlib.contextmanager
def recording():
  """While active, every run() also records what each iteration decided: it yields a list to which each run's
  Trace (numpy) is appended in call order. Runs compile separately with the recording (a static switch), so
  nothing is recorded, nor computed for it, outside this context. For diagnostics (bench/bench_eval_ties.py).
  """
  record: list = []
  _RECORDINGS.append(record)
  try:
    yield record
  finally:
    _RECORDINGS.remove(record)


@dataclasses.dataclass(frozen=True)
class Specials:
  """Token ids the loop needs (static). vocab_size: number of logits (the padded vocabulary, padded_vocab_size)."""
  mask_id: int
  vocab_size: int

  @classmethod
  def for_model(cls, model_cfg, mask_id: int) -> "Specials":
    """The mask id and the model's number of logits (its vocabulary padded to model.vocab_pad_multiple)."""
    return cls(mask_id=mask_id, vocab_size=padded_vocab_size(model_cfg))


@flax.struct.dataclass
class Rows:
  """Model-batch inputs that stay fixed over the loop (R = B, or 2B with CFG).

  base_embeds: (R, L, D) prompt embeddings in place, zeros on the region and on padding.
  region_start: (R,) row index where the region's embeddings go (P for conditional rows).
  positions: (R, L) int position ids; segment_ids: (R, L) int (0 = padding) or None for full attention.
  tail_padding: padding rows appended after the region (pad_length), so L = P + G + tail_padding.
  """
  base_embeds: Array
  region_start: Array
  positions: Array
  segment_ids: Array | None
  tail_padding: int = flax.struct.field(pytree_node=False, default=0)


@flax.struct.dataclass
class Carry:
  """State of the while loop.

  region: (B, G) current tokens; block: active block index; step: step inside the block; iteration: global
  step count; kv: cached keys/values (num_layers, R, L, K, H) each, or None; full_forwards / cached_forwards:
  number of model calls of each kind; trace: the Trace being filled (recording()) or None.
  """
  region: Array
  block: Array
  step: Array
  iteration: Array
  kv: tuple[Array, Array] | None
  full_forwards: Array
  cached_forwards: Array
  trace: Trace | None = None


@flax.struct.dataclass
class Trace:
  """What each iteration of one run decided (run() inside recording()). T = the plan's max_iterations (rows past
  the last iteration run stay zero), W = the window.

  region: (T, B, G) the region after the iteration; window_start: (T,) its window's first region index;
  candidates: (T, B, W) bool the masked positions of the active block; x0, prob, confidence: (T, B, W) what
  logits.choose_tokens gave (the reveal ranks the candidates by confidence); margin: (T, B, W) float32 top-1
  minus top-2 of the processed logits (how near the token choice was to a tie).
  """
  region: Array
  window_start: Array
  candidates: Array
  x0: Array
  prob: Array
  confidence: Array
  margin: Array


@flax.struct.dataclass
class SampleResult:
  """tokens: (B, G) the filled region; steps: loop iterations run; full_forwards / cached_forwards: model calls;
  trace: a Trace inside recording(), else None."""
  tokens: Array
  steps: Array
  full_forwards: Array
  cached_forwards: Array
  trace: Trace | None = None


def _row_embeds(model, rows: Rows, region: Array, num_cond: int) -> Array:
  """(R, L, D): the fixed prompt embeddings with the current region's embeddings put at region_start."""
  region_embeds = model.embed(region)
  region_embeds = jnp.concatenate([region_embeds] * (rows.base_embeds.shape[0] // num_cond), axis=0)
  length, g = rows.base_embeds.shape[1], region.shape[1]
  offset = jnp.arange(length)[None, :] - rows.region_start[:, None]
  in_region = (offset >= 0) & (offset < g)
  gathered = jnp.take_along_axis(region_embeds, jnp.clip(offset, 0, g - 1)[..., None], axis=1)
  return jnp.where(in_region[..., None], gathered.astype(rows.base_embeds.dtype), rows.base_embeds)


def _window_logits(model, cfg: SamplerConfig, rows: Rows, carry: Carry, first_row: Array, window: int,
                   num_cond: int) -> tuple[Array, tuple[Array, Array] | None, Array, Array]:
  """Per-position logits (B, W, V) of the region window whose predictions sit at rows first_row.. of the model.

  Returns the logits (CFG-mixed), the KV cache and the updated forward counters.
  """
  embeds = _row_embeds(model, rows, carry.region, num_cond)

  def full(_):
    if cfg.kv_cache:
      hidden, kv = model.hidden_states_and_kv(embeds, rows.positions, rows.segment_ids)
    else:
      hidden, kv = model.hidden_states(embeds, rows.positions, rows.segment_ids), carry.kv
    return jax.lax.dynamic_slice_in_dim(hidden, first_row, window, axis=1), kv

  def cached(_):
    # window + 1 rows (first_row + window <= L - 1): the window's last region position gets a fresh key/value.
    sub = lambda a: jax.lax.dynamic_slice_in_dim(a, first_row, window + 1, axis=1)
    hidden = model.hidden_states_cached(sub(embeds), sub(rows.positions), first_row, carry.kv, rows.segment_ids)
    return hidden[:, :window], carry.kv

  if cfg.kv_cache:
    refresh = carry.step == 0
    hidden, kv = jax.lax.cond(refresh, full, cached, None)
    full_forwards = carry.full_forwards + refresh.astype(jnp.int32)
    cached_forwards = carry.cached_forwards + (~refresh).astype(jnp.int32)
  else:
    (hidden, kv), full_forwards, cached_forwards = full(None), carry.full_forwards + 1, carry.cached_forwards
  logits = model.logits(hidden).astype(jnp.float32)
  if cfg.cfg_scale > 0:
    cond, uncond = logits[:num_cond], logits[num_cond:]
    logits = uncond + (cfg.cfg_scale + 1.0) * (cond - uncond)
  return logits, kv, full_forwards, cached_forwards


def _outside_block_reveal(masked: Array, candidates: Array) -> Array:
  """Upstream's reveal when the active block has no masks left: its top-1 over all -inf confidences takes the
  masked position (of the flattened batch, in region order) that torch's CPU top-k puts first among n ties.

  masked, candidates: (B, G) bool (the window is the whole region) -> (B, G) bool, at most one True.
  """
  flat = masked.reshape(-1)
  n = jnp.sum(flat)
  ties = jnp.asarray(topk_tie_rank())
  rank = jnp.where(n < ties.shape[0], ties[jnp.minimum(n, ties.shape[0] - 1)], 0)
  chosen = flat & (jnp.cumsum(flat) - 1 == rank) & ~jnp.any(candidates)
  return chosen.reshape(masked.shape)


def _select(cfg: SamplerConfig, candidates: Array, confidence: Array, prob: Array, t: Array, s: Array,
            last: Array, key: Array) -> Array:
  """Which window positions to reveal this step. candidates, confidence, prob: (B, W) -> (B, W) bool; key: () or
  (B,) (logits_lib.per_row_draw)."""
  if cfg.alg == "origin":
    return candidates & (last | (logits_lib.per_row_draw(jax.random.uniform, key, candidates.shape) < 1.0 - s / t))
  score = jnp.where(candidates, confidence, -jnp.inf)
  if cfg.alg_temp > 0:
    score = score / cfg.alg_temp + jnp.where(candidates, logits_lib.per_row_draw(jax.random.gumbel, key, score.shape),
                                             0.0)
  shape = candidates.shape
  if cfg.mode == "upstream":  # one top-k over the flattened batch, as upstream
    score, candidates = score.reshape(1, -1), candidates.reshape(1, -1)
  order = jnp.argsort(-score, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  num_masked = jnp.sum(candidates, axis=-1, keepdims=True)
  if cfg.threshold is not None:
    reveal = candidates & ((rank == 0) | (prob.reshape(candidates.shape) >= cfg.threshold) | last)
  else:
    k = jnp.floor(num_masked.astype(jnp.float32) * (1.0 - s / t)).astype(jnp.int32)
    k = jnp.minimum(jnp.maximum(jnp.where(last, num_masked, k), 1), num_masked)
    reveal = candidates & (rank < k)
  return reveal.reshape(shape)


def _step_keys(key: Array, iteration: Array) -> tuple[Array, Array]:
  """The token and reveal keys of one step: split(fold_in(key, iteration)), of the batch's key () or of each
  row's (B,) (then each row's keys are those it gets alone)."""
  def one(k):
    return jax.random.split(jax.random.fold_in(k, iteration))
  keys = one(key) if key.ndim == 0 else jax.vmap(one)(key)  # (2,) or (B, 2)
  return keys[..., 0], keys[..., 1]


def _loop(model, rows: Rows, region: Array, key: Array, cfg: SamplerConfig, specials: Specials, plan: Plan,
          prompt_len: int, record: bool = False) -> SampleResult:
  _TRACES[0] += 1
  num_cond, g = region.shape
  window = plan.window
  outside_block = reveals_outside_block(cfg)  # upstream mode: a filled block's steps reveal other positions
  starts, ends = jnp.asarray(plan.block_starts), jnp.asarray(plan.block_ends)
  block_steps, timesteps = jnp.asarray(plan.block_steps), jnp.asarray(plan.timesteps)
  kv = None
  if cfg.kv_cache:
    c = model.cfg
    shape = (c.num_layers, *rows.positions.shape, c.num_kv_heads, c.head_dim)
    kv = (jnp.zeros(shape, c.dtype), jnp.zeros(shape, c.dtype))
  if cfg.position_penalty != 1.0:
    penalty_table = jnp.asarray(logits_lib.position_penalty_table(g, cfg.position_penalty, cfg.position_window))
  zero = jnp.zeros((), jnp.int32)
  trace = None
  if record:
    steps, per_position = max(plan.max_iterations, 1), (max(plan.max_iterations, 1), num_cond, window)
    trace = Trace(region=jnp.zeros((steps, num_cond, g), jnp.int32), window_start=jnp.zeros((steps,), jnp.int32),
                  candidates=jnp.zeros(per_position, bool), x0=jnp.zeros(per_position, jnp.int32),
                  prob=jnp.zeros(per_position), confidence=jnp.zeros(per_position), margin=jnp.zeros(per_position))
  init = Carry(region=region, block=zero, step=zero, iteration=zero, kv=kv, full_forwards=zero,
               cached_forwards=zero, trace=trace)

  def body(carry: Carry) -> Carry:
    b, i = carry.block, carry.step
    block_start, block_end = starts[b], ends[b]
    window_start = jnp.minimum(block_start, g - window)
    logits, kv, full_forwards, cached_forwards = _window_logits(
        model, cfg, rows, carry, prompt_len - 1 + window_start, window, num_cond)

    if cfg.mode == "default":  # upstream may "reveal" the mask id itself, leaving the position masked
      logits = logits.at[..., specials.mask_id].set(logits_lib.FILL)
    masked = carry.region == specials.mask_id
    repeated = None
    if cfg.uses_repetition_penalty:
      repeated = logits_lib.decoded_ids_present(carry.region, specials.vocab_size, specials.mask_id,
                                                exclude_zero=cfg.mode == "upstream")
      if cfg.mode == "upstream":  # upstream has no history before its first step
        repeated &= carry.iteration > 0
    position_factor = None
    if cfg.position_penalty != 1.0:
      factors = logits_lib.position_penalty_factors(masked, penalty_table)
      position_factor = jax.lax.dynamic_slice_in_dim(factors, window_start, window, axis=1)

    token_key, reveal_key = _step_keys(key, carry.iteration)
    processed = logits_lib.process_logits(logits, cfg, repeated, position_factor)
    x0, prob, confidence = logits_lib.choose_tokens(processed, cfg, token_key)

    index = window_start + jnp.arange(window)
    in_block = (index >= block_start) & (index < block_end)
    window_tokens = jax.lax.dynamic_slice_in_dim(carry.region, window_start, window, axis=1)
    candidates = (window_tokens == specials.mask_id) & in_block[None]
    last = i == block_steps[b] - 1
    reveal = _select(cfg, candidates, confidence, prob, timesteps[b, i], timesteps[b, i + 1], last, reveal_key)
    if outside_block:  # the window is the whole region
      reveal |= _outside_block_reveal(window_tokens == specials.mask_id, candidates)
    window_tokens = jnp.where(reveal, x0, window_tokens)
    new_region = jax.lax.dynamic_update_slice_in_dim(carry.region, window_tokens, window_start, axis=1)

    # Not `candidates & ~reveal`: in upstream mode a position "revealed" as the mask id stays masked.
    block_done = last | ~jnp.any((window_tokens == specials.mask_id) & (in_block[None] | outside_block))
    trace = carry.trace
    if trace is not None:
      top2 = jax.lax.top_k(processed, 2)[0]
      now = Trace(region=new_region, window_start=window_start, candidates=candidates, x0=x0, prob=prob,
                  confidence=confidence, margin=top2[..., 0] - top2[..., 1])
      trace = jax.tree.map(lambda buffer, value: buffer.at[carry.iteration].set(value), trace, now)
    return Carry(region=new_region, block=jnp.where(block_done, b + 1, b), step=jnp.where(block_done, 0, i + 1),
                 iteration=carry.iteration + 1, kv=kv, full_forwards=full_forwards,
                 cached_forwards=cached_forwards, trace=trace)

  def cond(carry: Carry) -> Array:
    return carry.block < len(plan.block_steps)

  def skip_filled_blocks(carry: Carry) -> Carry:
    """Moves past blocks with nothing to generate (fixed by inpainting; with outside-block reveals: nothing
    masked in the region) or given 0 steps (upstream mode) without a model call."""
    def filled(c: Carry) -> Array:
      index = jnp.arange(g)
      in_block = (index >= starts[c.block]) & (index < ends[c.block])
      pending = (c.region == specials.mask_id) & (in_block[None] | outside_block)
      nothing_to_do = ~jnp.any(pending) | (block_steps[c.block] == 0)
      return (c.block < len(plan.block_steps)) & nothing_to_do
    return jax.lax.while_loop(filled, lambda c: c.replace(block=c.block + 1), carry)

  final = jax.lax.while_loop(cond, lambda c: skip_filled_blocks(body(c)), skip_filled_blocks(init))
  return SampleResult(tokens=final.region, steps=final.iteration, full_forwards=final.full_forwards,
                      cached_forwards=final.cached_forwards, trace=final.trace)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "specials", "record"))
def _run(graphdef, state, rows: Rows, region: Array, key: Array, *, cfg: SamplerConfig, specials: Specials,
         record: bool = False) -> SampleResult:
  model = nnx.merge(graphdef, state)
  region_len = region.shape[1]
  prompt_len = rows.base_embeds.shape[1] - rows.tail_padding - region_len
  return _loop(model, rows, region, key, cfg, specials, make_plan(cfg, region_len), prompt_len, record)


def run(model, cfg: SamplerConfig, rows: Rows, region: Array, key: Array, specials: Specials) -> SampleResult:
  """Runs the compiled loop. rows: model-batch inputs (see build_rows); region: (B, G) initial region; key: ()
  one random stream for the batch, or (B,) one per row (a row then samples as it does alone with its key).

  Compiles once per (shapes, cfg, specials, model graph). With parameters sharded over a mesh (e.g.
  checkpoints.load(..., mesh=)) the loop runs under that mesh and its logical axis rules (tensor-parallel
  heads, MLP and vocabulary), so the model's activation constraints and the Splash kernel see it.
  """
  graphdef, state = nnx.split(model)
  mesh = sharding.params_mesh(state)
  with contextlib.nullcontext() if mesh is None else sharding.use_mesh(mesh):
    result = _run(graphdef, state, rows, region, key, cfg=cfg, specials=specials, record=bool(_RECORDINGS))
  if _RECORDINGS:
    _RECORDINGS[-1].append(jax.device_get(result.trace))
  return result


def _positions(valid: np.ndarray) -> np.ndarray:
  """Upstream's batched position ids: cumsum(valid) - 1, padding set to 1. valid: (R, L) bool."""
  return np.where(valid, np.cumsum(valid, axis=1) - 1, 1).astype(np.int32)


def build_rows(model, prompt_embeds: Array, prompt_mask: np.ndarray, region_len: int, cfg: SamplerConfig,
               uncond_embeds: Array | None = None, uncond_mask: np.ndarray | None = None) -> Rows:
  """Model-batch inputs for B left-padded prompts (and, with CFG, their unconditional prompts).

  prompt_embeds: (B, P, D); prompt_mask: (B, P) bool, True on real tokens (padding on the left);
  uncond_embeds: (B, Pu, D) and uncond_mask (B, Pu), left padded, required when cfg.cfg_scale > 0.
  """
  b, p, d = prompt_embeds.shape
  prompt_mask = np.asarray(prompt_mask, bool)
  if prompt_mask.shape != (b, p):
    raise ValueError(f"prompt_mask has shape {prompt_mask.shape}, expected {(b, p)}")
  if not prompt_mask[:, -1].all():
    raise ValueError("prompts must be left padded: the last prompt position of every row must be a real token")
  length = p + region_len
  embeds = [jnp.concatenate([prompt_embeds, jnp.zeros((b, region_len, d), prompt_embeds.dtype)], axis=1)]
  valid = [np.concatenate([prompt_mask, np.ones((b, region_len), bool)], axis=1)]
  region_start = [np.full((b,), p, np.int32)]
  if cfg.cfg_scale > 0:
    if uncond_embeds is None or uncond_mask is None:
      raise ValueError("cfg_scale > 0 needs unconditional prompts (uncond_ids or uncond_embeds)")
    pu = uncond_embeds.shape[1]
    uncond_mask = np.asarray(uncond_mask, bool)
    if pu > p:
      raise ValueError(f"the unconditional prompt ({pu}) is longer than the prompt ({p}); pad the prompt")
    if cfg.cfg_alignment == "region":  # left pad to P: the regions share row indices
      embeds.append(jnp.concatenate([jnp.zeros((b, p - pu, d), prompt_embeds.dtype), uncond_embeds,
                                     jnp.zeros((b, region_len, d), prompt_embeds.dtype)], axis=1))
      valid.append(np.concatenate([np.zeros((b, p - pu), bool), uncond_mask, np.ones((b, region_len), bool)], 1))
      region_start.append(np.full((b,), p, np.int32))
    else:  # upstream: [uncond prompt ; region ; zero padding], rows mixed by absolute index
      if not uncond_mask.all():
        raise ValueError("cfg_alignment='upstream' takes unpadded unconditional prompts")
      embeds.append(jnp.concatenate([uncond_embeds, jnp.zeros((b, length - pu, d), prompt_embeds.dtype)], axis=1))
      # Upstream builds a mask for this row but forward_dream sets attention_mask = None: the zero padding is
      # attended to (omni_diffusion/models/dream/modeling_dream.py, DreamModel.forward_dream).
      valid.append(np.ones((b, length), bool))
      region_start.append(np.full((b,), pu, np.int32))
  valid = np.concatenate(valid, axis=0)
  segment_ids = None if valid.all() else jnp.asarray(valid.astype(np.int32))
  positions = _positions(valid)  # all-valid unconditional rows ('upstream') get arange(L): upstream passes none
  rows = Rows(base_embeds=jnp.concatenate(embeds, axis=0), region_start=jnp.asarray(np.concatenate(region_start)),
              positions=jnp.asarray(positions), segment_ids=segment_ids)
  return pad_length(rows, KERNEL_BLOCK if model.cfg.attention_impl == "splash" else 1)


def pad_length(rows: Rows, multiple: int) -> Rows:
  """Rows padded at the end to a length that is a multiple of `multiple` (Splash's block: KERNEL_BLOCK).

  The attention wrapper pads any length itself, but inside every layer of every step; padding the rows once
  here makes those pads no-ops.

  The new rows are padding (segment id 0, zero embeddings, position 1): no query attends to them, so the
  sampled tokens are unchanged.
  """
  r, length = rows.base_embeds.shape[:2]
  extra = -length % multiple
  if not extra:
    return rows
  segment_ids = jnp.ones((r, length), jnp.int32) if rows.segment_ids is None else rows.segment_ids
  pad = lambda x, value: jnp.concatenate([x, jnp.full((r, extra, *x.shape[2:]), value, x.dtype)], axis=1)
  return Rows(base_embeds=pad(rows.base_embeds, 0), region_start=rows.region_start, positions=pad(rows.positions, 1),
              segment_ids=pad(segment_ids, 0), tail_padding=rows.tail_padding + extra)
