"""Static sampler settings and the host-side step schedule (timesteps, blocks, steps per block).

Everything here is plain Python / NumPy: it fixes the shapes and constants the jitted loop is compiled for.
"""
from __future__ import annotations

import dataclasses

import numpy as np

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy", "entropy-penalty")
MODES = ("default", "upstream")
CFG_ALIGNMENTS = ("region", "upstream")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Settings of one compiled sampler; hashable, so it is a static jit argument.

  steps: denoising steps over the whole generation region (upstream clamps it to the region length).
  alg: which confidence decides the reveal order (see ALGORITHMS). 'origin' reveals each masked position of
    the active block with probability 1 - s/t (upstream's origin ignores blocks).
  temperature / top_p / top_k: token sampling (temperature 0 = argmax). top_p is applied even at temperature 0,
    as upstream does (it truncates the distribution the entropy confidence sees).
  alg_temp: 0 = take the top-k confidences; > 0 = sample positions without replacement from
    softmax(confidence / alg_temp) (Gumbel top-k).
  eps: the last timestep of linspace(1, eps, steps + 1).
  block_size: None = one block over the region; else semi-autoregressive blocks of this many positions, each
    given int(block_len / region_len * steps) steps (upstream).
  repetition_penalty: CTRL-style penalty on ids already decoded in the region (used by alg 'entropy-penalty').
  position_penalty: P of the position-penalty ramp (1.0 = off); position_window: masks exempt from it (100).
  boa_fraction: None = off; else `<|begin_of_audio|>` is put at region index int(fraction * masked count).
  cfg_scale: classifier-free guidance weight (0 = off): logits = un + (cfg + 1) * (cond - un), before the shift.
  cfg_alignment: 'region' puts the generation region of the unconditional row at the same indices as the
    conditional one (left-padding its prompt, the padding masked out); 'upstream' copies upstream (prompt at
    index 0, region right after it, zero embeddings at the end that every position attends to, since upstream's
    forward_dream drops the attention mask; rows are mixed by absolute index).
  mode: 'default' = per-row reveal counts, the mask id is never predicted, the repetition penalty counts
    every decoded id from the first step, blocks tile the region and each gets at least one step; 'upstream' =
    upstream's reveal count over the flattened batch, its repetition-penalty id filter (ids 0 and mask
    excluded, none at the first step), the mask id may be predicted (the position then stays masked), its block
    count (after the `<|begin_of_audio|>` pre-fill) and its 0-step blocks (see make_plan): token-identical
    parity at batch 1 (tests/test_sampling_parity.py). Upstream mode also keeps a block's steps running
    while masks remain anywhere in the region: when a block fills before its last step (the pre-fill inside a
    multi-block region) upstream's top-1 over all -inf confidences reveals one masked position outside the
    block per step, the one torch's CPU top-k puts first among ties (see topk_tie_rank); it is reproduced when
    the window is the whole region (upstream mode without kv_cache) and alg_temp is 0 (with alg_temp > 0
    upstream's torch.multinomial raises on the all-NaN softmax; with kv_cache upstream mode moves on).
  threshold: None = the fixed reveal schedule; else confidence-threshold parallel decoding: every masked
    position of the active block whose probability p(x0) >= threshold is revealed, and at least the most
    confident one; the last step of a block reveals the rest. A block ends early once it is filled.
  kv_cache: approximate block-wise KV cache (Fast-dLLM dual cache): keys/values of all positions are computed
    at the first step of each block; later steps of the block recompute only the block (plus the position
    before it, which predicts the block's first token under Dream's shift). Requires block_size.
  """
  steps: int
  alg: str = "entropy"
  temperature: float = 0.0
  top_p: float | None = None
  top_k: int | None = None
  alg_temp: float = 0.0
  eps: float = 1e-3
  block_size: int | None = None
  repetition_penalty: float = 1.0
  position_penalty: float = 1.0
  position_window: int = 100
  boa_fraction: float | None = None
  cfg_scale: float = 0.0
  cfg_alignment: str = "region"
  mode: str = "default"
  threshold: float | None = None
  kv_cache: bool = False

  def __post_init__(self):
    checks = [
        (self.alg in ALGORITHMS, f"alg must be one of {ALGORITHMS}, got {self.alg!r}"),
        (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
        (self.cfg_alignment in CFG_ALIGNMENTS, f"cfg_alignment must be one of {CFG_ALIGNMENTS}"),
        (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
        (self.temperature >= 0 and self.alg_temp >= 0, "temperature and alg_temp must be >= 0"),
        (self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
        (self.top_k is None or self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}"),
        (self.block_size is None or self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}"),
        (self.threshold is None or 0 < self.threshold <= 1, f"threshold must be in (0, 1], got {self.threshold}"),
        (not self.kv_cache or self.block_size is not None, "kv_cache needs a block_size"),
        (not (self.alg == "origin" and self.threshold is not None), "alg 'origin' has no confidence threshold"),
        (not (self.alg_temp > 0 and self.threshold is not None), "alg_temp and threshold exclude each other"),
        (self.repetition_penalty > 0 and self.position_penalty > 0, "penalties must be > 0"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(message)

  @property
  def uses_repetition_penalty(self) -> bool:
    return self.alg == "entropy-penalty" and self.repetition_penalty != 1.0


def reveals_outside_block(cfg: SamplerConfig) -> bool:
  """Whether a filled block's remaining steps reveal masked positions elsewhere, as upstream does (see mode);
  the sampler then scores the whole region every step."""
  return cfg.mode == "upstream" and not cfg.kv_cache and cfg.alg != "origin" and cfg.alg_temp == 0 \
      and cfg.threshold is None


def linspace_timesteps(steps: int, eps: float) -> np.ndarray:
  """linspace(1, eps, steps + 1) in float32, bit-identical to torch.linspace on CPU (x86, FMA).

  torch computes the float32 step, then start + step * i for the first half and end - step * (n - 1 - i) for
  the second half, each with one rounding. Returns (steps + 1,) float32.
  """
  n = steps + 1
  start, end = np.float32(1.0), np.float32(eps)
  if n == 1:
    return np.array([start], np.float32)
  step = np.float64((end - start) / np.float32(n - 1))
  i = np.arange(n, dtype=np.float64)
  first = (np.float64(start) + step * i).astype(np.float32)
  second = (np.float64(end) - step * (n - 1 - i)).astype(np.float32)
  return np.where(np.arange(n) < n // 2, first, second)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The host-side schedule for one region length.

  window: number of region positions the model scores per step (block_size, or the region length; always the
    region length when reveals_outside_block).
  block_starts / block_ends: (num_blocks,) region indices of each block.
  block_steps: (num_blocks,) steps given to each block.
  timesteps: (num_blocks, max_steps + 1) float32, row b = linspace(1, eps, block_steps[b] + 1), padded.
  """
  window: int
  block_starts: np.ndarray
  block_ends: np.ndarray
  block_steps: np.ndarray
  timesteps: np.ndarray

  @property
  def max_iterations(self) -> int:
    return int(self.block_steps.sum())


def _nth_element_first_of_equal(n: int) -> int:
  """Which of n equal keys libstdc++'s std::nth_element(first, first, last, comp) moves to `first`.

  Transcribes bits/stl_algo.h (__introselect with depth limit 2 lg n, __unguarded_partition_pivot,
  __move_median_to_first, __unguarded_partition, __insertion_sort) for keys that never compare less: the median
  of three is then the middle element, the partition swaps pairs from both ends until they cross, and the
  final insertion sort and the heap-select fallback move nothing.
  """
  order = list(range(n))
  first, last, depth = 0, n, 2 * (n.bit_length() - 1)
  while last - first > 3 and depth > 0:
    depth -= 1
    mid = first + (last - first) // 2
    order[first], order[mid] = order[mid], order[first]
    lo, hi = first + 1, last
    while True:
      hi -= 1
      if lo >= hi:
        break
      order[lo], order[hi] = order[hi], order[lo]
      lo += 1
    last = lo  # the cut is past `first` (the nth position), so the search continues left of it
  return order[first]


TOPK_TIE_CUTOFF = 64  # torch's top-k uses std::partial_sort when k * 64 <= n (k = 1 here)


def topk_tie_rank(max_len: int = TOPK_TIE_CUTOFF) -> np.ndarray:
  """(max_len,) int32: entry n is the index torch.topk(c, 1) returns on CPU for n equal values c (n >= 1).

  aten/src/ATen/native/TopKImpl.h (topk_impl_loop) sorts (value, index) pairs by value only: with k * 64 <= n
  it calls std::partial_sort, which keeps the first of equal keys (index 0); otherwise std::nth_element (see
  _nth_element_first_of_equal). Checked against torch 2.14.1 for n = 1..399 in tests/test_sampling_parity.py.
  """
  return np.array([0] + [_nth_element_first_of_equal(n) if n < TOPK_TIE_CUTOFF else 0
                         for n in range(1, max_len)], np.int32)


def make_plan(cfg: SamplerConfig, region_len: int) -> Plan:
  """Blocks and steps as upstream: steps = min(steps, region_len); block b gets int(len_b / region_len * steps).

  Default mode: blocks tile the whole region and each gets at least one step. Upstream mode (as upstream's
  DreamGenerationMixin._sample does): the block count is ceil(masked / block_size) with the masked count taken
  after the `<|begin_of_audio|>` pre-fill, so with a pre-fill and region_len = 1 mod block_size the last position
  is in no block and stays masked; a block given 0 steps is skipped (its positions stay masked too), unless an
  earlier block's outside-block reveal (see SamplerConfig.mode) fills them.
  """
  if region_len < 1:
    raise ValueError(f"the generation region must have at least one position, got {region_len}")
  steps = min(cfg.steps, region_len)
  size = region_len if cfg.block_size is None else min(cfg.block_size, region_len)
  window = region_len if reveals_outside_block(cfg) else size
  starts = np.arange(0, region_len, size)
  if cfg.mode == "upstream":
    num_masked = region_len - (cfg.boa_fraction is not None)
    starts = starts[:max(-(-num_masked // size), 1)]
  ends = np.minimum(starts + size, region_len)
  ratio = (ends - starts).astype(np.float32) / np.float32(region_len)
  block_steps = (ratio * np.float32(steps)).astype(np.int64)
  if cfg.mode == "default":  # a block given 0 steps would never be revealed
    block_steps = np.maximum(block_steps, 1)
  table = np.ones((len(starts), block_steps.max() + 1), np.float32)
  for b, n in enumerate(block_steps):
    table[b, :n + 1] = linspace_timesteps(int(n), cfg.eps)
  return Plan(window=window, block_starts=starts, block_ends=ends, block_steps=block_steps, timesteps=table)
