"""PyTorch reference of Omni-Diffusion's upstream sampler (batch 1), written from the reference notes
(/work/shared/reference/omni_diffusion_upstream.md sections 4.1-4.3), eager, one full forward per step.

It is the oracle of tests/test_sampling_parity.py and the baseline of bench/bench_sampler.py. The model is a
transformers Qwen2 run bidirectionally (tests/torch_reference.py); the prompt region of the canvas holds id 0
and its embeddings are overwritten by the prompt embeddings at every step, as upstream does.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class ReferenceSettings:
  steps: int
  alg: str = "entropy"
  temperature: float = 0.0
  top_p: float | None = None
  top_k: int | None = None
  alg_temp: float | None = None
  eps: float = 1e-3
  block_size: int | None = None
  repeat_penalty: float = 1.0
  max_position_penalty: float = 1.0
  add_boa_token: bool = False
  cfg: float = 0.0


def sharpen(model, scale: float = 6.0):
  """Scales a random model's weight matrices in place. At the default 0.02 init many masked positions get
  float32-identical confidences, and the order of a tie is not defined by torch.topk; larger weights make the
  confidences position-dependent and well separated, so token-identical comparisons are meaningful."""
  with torch.no_grad():
    for param in model.parameters():
      if param.ndim == 2:
        param.mul_(scale)
  return model


def _top_p(logits, p, stable=False):
  """Upstream's top-p. Its tie order is torch's default (unstable, implementation-defined) sort; stable=True
  puts ties in index order, the order omnidiff_jax keeps them in."""
  sorted_logits, order = torch.sort(logits, descending=True, stable=stable)
  cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
  remove = cumulative > p
  remove[..., 1:] = remove[..., :-1].clone()
  remove[..., 0] = False
  mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, remove)
  return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def _top_k(logits, k):
  kth = torch.topk(logits, min(k, logits.size(-1)))[0][..., -1, None]
  return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def sample_tokens(logits, s: ReferenceSettings, past_x=None, mask_id=None, penalise_repeats=False,
                  generator=None):
  """logits: (N, V) of the masked positions in sequence order -> confidence (N,), x0 (N,)."""
  if s.temperature > 0:
    logits = logits / s.temperature
  if s.top_p is not None and s.top_p < 1:
    logits = _top_p(logits, s.top_p)
  if s.top_k is not None:
    logits = _top_k(logits, s.top_k)
  logits = logits.clone()
  if penalise_repeats and s.repeat_penalty != 1.0:
    decoded = past_x[(past_x != 0) & (past_x != mask_id)]
    for token in sorted(set(decoded.tolist())):
      column = logits[:, token]
      logits[:, token] = torch.where(column < 0, column * s.repeat_penalty, column / s.repeat_penalty)
  if s.max_position_penalty != 1.0 and logits.shape[0] > 100:
    n = logits.shape[0]
    ramp = [i / (n - 100) * (s.max_position_penalty - 1.0) + 1.0 for i in range(n - 100)]
    factor = torch.cat([torch.ones(100), torch.tensor(ramp, dtype=torch.float64).float()])[:, None]
    logits = torch.where(logits < 0, logits * factor, logits / factor)
  probs = torch.softmax(logits, dim=-1)
  if s.temperature > 0:
    x0 = torch.multinomial(probs, 1, generator=generator)[:, 0]
    confidence = torch.gather(probs, -1, x0[:, None])[:, 0]
  else:
    confidence, x0 = probs.max(dim=-1)
  if s.alg == "topk_margin":
    top = torch.sort(probs, dim=-1, descending=True)[0]
    confidence = top[:, 0] - top[:, 1]
  if s.alg in ("entropy", "entropy-penalty"):
    confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
  return confidence, x0


@torch.no_grad()
def generate(model, prompt_embeds: torch.Tensor, region_len: int, s: ReferenceSettings, *, mask_id: int,
             boa_id: int | None = None, uncond_ids: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
  """Upstream's loop. model: transformers Qwen2ForCausalLM; prompt_embeds: (1, P, D);
  uncond_ids: (1, Pu) for CFG. Returns the filled region (1, G) int64.
  """
  generator = torch.Generator().manual_seed(seed)
  embed = model.get_input_embeddings()
  p = prompt_embeds.shape[1]
  x = torch.cat([torch.zeros(1, p, dtype=torch.long), torch.full((1, region_len), mask_id, dtype=torch.long)], 1)
  length = x.shape[1]
  total_steps = min(s.steps, region_len)
  if s.add_boa_token:
    n_masked = (x == mask_id).sum()
    x[:, int((length - n_masked) + n_masked * 0.2)] = boa_id
  block_size = region_len if s.block_size is None else s.block_size
  n_masked = int((x == mask_id).sum())
  num_blocks = -(-n_masked // block_size)
  history = []
  for block in range(num_blocks):
    block_mask = torch.zeros(length, dtype=torch.bool)
    block_mask[p + block * block_size: p + (block + 1) * block_size] = True
    steps = int(block_mask.sum() / (length - p) * total_steps)
    timesteps = torch.linspace(1, s.eps, steps + 1)
    for i in range(steps):
      mask_index = x == mask_id
      if mask_index.sum() == 0:
        break
      embeds = embed(x)
      embeds[:, :p] = prompt_embeds
      if s.cfg > 0:
        un_x = torch.cat([uncond_ids, x[:, p:]], dim=1)
        un_embeds = embed(un_x)
        un_embeds = torch.cat([un_embeds, torch.zeros(1, length - un_x.shape[1], un_embeds.shape[-1])], 1)
        mask = torch.zeros(2, 1, length, length, dtype=torch.bool)
        mask[0] = True
        mask[1, :, :un_x.shape[1], :un_x.shape[1]] = True
        both = model(inputs_embeds=torch.cat([embeds, un_embeds]), attention_mask=mask).logits
        logits = both[1:] + (s.cfg + 1) * (both[:1] - both[1:])
      else:
        mask = torch.ones(1, 1, length, length, dtype=torch.bool)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
      logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
      mask_logits = logits[mask_index].float()
      t, s_ = timesteps[i], timesteps[i + 1]
      if s.alg == "origin":
        p_transfer = 1 - s_ / t if i < steps - 1 else 1
        x0 = torch.full_like(x[mask_index], mask_id)
        transfer = torch.rand(x0.shape, generator=generator) < p_transfer
        _, x0[transfer] = sample_tokens(mask_logits[transfer], s, generator=generator)
        x[mask_index] = x0
      else:
        confidence, x0 = sample_tokens(mask_logits, s, past_x=history[-1] if history else None, mask_id=mask_id,
                                       penalise_repeats=s.alg == "entropy-penalty" and bool(history),
                                       generator=generator)
        confidence = confidence + torch.where(block_mask[mask_index[0]], 0.0, -torch.inf)
        num_mask = (x[:, block_mask] == mask_id).sum()
        k = int(num_mask * (1 - s_ / t)) if i < steps - 1 else int(num_mask)
        k = max(k, 1)
        if not s.alg_temp:
          _, transfer = torch.topk(confidence, k)
        else:
          weights = F.softmax(confidence / s.alg_temp, dim=-1)
          transfer = torch.multinomial(weights, num_samples=k, generator=generator)
        x0_ = torch.full_like(x0, mask_id)
        x0_[transfer] = x0[transfer]
        x[mask_index] = x0_
      history.append(x.clone())
  return x[:, p:]
