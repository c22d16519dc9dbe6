"""PyTorch reference of Omni-Diffusion's sampler, transcribed from upstream's code (VITA-MLLM/Omni-Diffusion at
c4f4625): omni_diffusion/models/dream/generation_utils.py (top_p_logits, top_k_logits, sample_tokens,
DreamGenerationMixin._sample) and omni_diffusion/models/dream/modeling_dream.py (DreamModel.forward_dream,
DreamSdpaAttention.forward). Each block names the upstream function it copies; statements keep upstream's order
and arithmetic (float32 tensors, python-float scalars, torch's default sort and top-k).

It is the oracle of tests/test_sampling_parity.py (mode="upstream") and the baseline of bench/bench_sampler.py.
Departures from upstream, none of which changes a number:
- The model is transformers' Qwen2 (tests/torch_reference.py), the architecture of Dream's backbone, called with
  a float additive all-zero mask (full bidirectional attention). Upstream's forward_dream sets attention_mask =
  None and DreamSdpaAttention.forward then passes an all-True mask to SDPA: every query sees every key, the
  unconditional CFG row's zero padding included, positions arange(L) (no position ids are passed).
- Batch 1, prompts given as embeddings (upstream's inputs_embeds path: the prompt part of the canvas holds id 0).
- The unconditional prompt ids and the `<|begin_of_audio|>` id are arguments (upstream encodes the task's
  empty prompt with its tokenizer and hard codes 151684).
- Histories are always kept (upstream keeps them with return_dict_in_generate=True, which alg 'entropy-penalty'
  needs); tqdm, prints, the identity hooks and unused debugging values (all_logit, logit/indic) are left out.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributions as dists
import torch.nn.functional as F


@dataclasses.dataclass
class ReferenceSettings:
  """Upstream's generation config fields and _sample arguments (block_size -1 = one block over the region)."""
  steps: int
  alg: str = "entropy"
  temperature: float = 0.0
  top_p: float | None = None
  top_k: int | None = None
  alg_temp: float | None = None
  eps: float = 1e-3
  block_size: int = -1
  repeat_penalty: float = 1.0
  max_position_penalty: float = 1.0
  add_boa_token: bool = False
  cfg: float = 0.0


def sharpen(model, scale: float = 6.0):
  """Scales a random model's weight matrices in place (test helper, not upstream). At the default 0.02 init many
  masked positions get float32-identical confidences, and the order of a tie is not defined by torch.topk;
  larger weights make the confidences position-dependent and well separated."""
  with torch.no_grad():
    for param in model.parameters():
      if param.ndim == 2:
        param.mul_(scale)
  return model


# generation_utils.py, top_p_logits. torch.sort's default (unstable) order of tied logits is unspecified.
def top_p_logits(logits, top_p=None):
  sorted_logits, sorted_indices = torch.sort(logits, descending=True)
  cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
  sorted_indices_to_remove = cumulative_probs > top_p
  sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
  sorted_indices_to_remove[..., 0] = 0
  mask = torch.zeros_like(logits, dtype=torch.bool, device=logits.device)
  mask = mask.scatter_(-1, sorted_indices, sorted_indices_to_remove)
  return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


# generation_utils.py, top_k_logits.
def top_k_logits(logits, top_k=None):
  top_k = min(top_k, logits.size(-1))
  indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
  return logits.masked_fill(indices_to_remove, torch.finfo(logits.dtype).min)


# generation_utils.py, sample_tokens. logits: (N, V) of the masked positions in sequence order.
def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False, neg_entropy=False,
                  repeat_penalty=1.0, max_position_penalty=1.0, past_x=None, mask_id=None):
  if temperature > 0:
    logits = logits / temperature
  if top_p is not None and top_p < 1:
    logits = top_p_logits(logits, top_p)
  if top_k is not None:
    logits = top_k_logits(logits, top_k)

  if repeat_penalty != 1.0:
    select_mask = torch.logical_and((past_x != 0), (past_x != mask_id))
    generated_tokens = set(past_x[select_mask].tolist())
    for token in set(generated_tokens):
      logits[:, token][logits[:, token] < 0] *= repeat_penalty
      logits[:, token][logits[:, token] >= 0] /= repeat_penalty

  if max_position_penalty != 1.0:
    token_length = logits.shape[-2]
    if token_length > 100:
      penalty_map = [i / (token_length - 100) * (max_position_penalty - 1.0) + 1.0 for i in range(token_length - 100)]
      penalty_map = torch.tensor(penalty_map).unsqueeze(-1).to(logits.device).to(logits.dtype)
      penalty_map = torch.cat([torch.ones_like(logits[:100, :1]), penalty_map], dim=0)
      penalty_map = penalty_map.repeat(1, logits.shape[-1])
      logits[logits < 0] *= penalty_map[logits < 0]
      logits[logits >= 0] /= penalty_map[logits >= 0]

  probs = torch.softmax(logits, dim=-1)
  if temperature > 0:
    x0 = dists.Categorical(probs=probs).sample()
    confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
  else:
    confidence, x0 = probs.max(dim=-1)
  if margin_confidence:
    sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
    confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
  if neg_entropy:
    epsilon = 1e-10
    log_probs = torch.log(probs + epsilon)
    confidence = torch.sum(probs * log_probs, dim=-1)
  return confidence, x0


def forward_dream_logits(model, inputs_embeds):
  """modeling_dream.py, DreamModel.forward_dream: `attention_mask = None`, no position ids; with a None mask
  DreamSdpaAttention.forward attends everywhere. Here: an all-zero float additive mask. (R, L, D) -> (R, L, V)."""
  r, length = inputs_embeds.shape[:2]
  full = torch.zeros(r, 1, length, length, dtype=inputs_embeds.dtype)
  return model(inputs_embeds=inputs_embeds, attention_mask=full).logits


@torch.no_grad()
def generate(model, inputs_embeds: torch.Tensor, max_new_tokens: int, s: ReferenceSettings, *, mask_token_id: int,
             boa_id: int | None = None, un_x: list[int] | None = None, seed: int = 0) -> torch.Tensor:
  """generation_utils.py, DreamGenerationMixin._sample (inputs_embeds path, batch 1).

  model: transformers Qwen2ForCausalLM; inputs_embeds: (1, P, D) prompt embeddings; un_x: the unconditional
  prompt ids for CFG (s.cfg > 0). Returns the generation region x[:, P:] (1, max_new_tokens) int64; positions
  upstream leaves masked keep mask_token_id.
  """
  torch.manual_seed(seed)
  embed_tokens = model.get_input_embeddings()
  steps = min(s.steps, max_new_tokens)
  eps, alg, alg_temp = s.eps, s.alg, s.alg_temp
  temperature, top_p, top_k = s.temperature, s.top_p, s.top_k
  repeat_penalty, max_position_penalty, cfg = s.repeat_penalty, s.max_position_penalty, s.cfg
  histories = []
  block_size = max_new_tokens if s.block_size < 0 else s.block_size

  bsz, seq_len = inputs_embeds.shape[:2]
  max_length = seq_len + max_new_tokens
  input_ids = torch.full((bsz, seq_len), 0, dtype=torch.long)
  x = F.pad(input_ids, (0, max_length - input_ids.shape[1]), value=mask_token_id)

  if s.add_boa_token:
    bos_index = int((x.shape[1] - (x == mask_token_id).sum()) + (x == mask_token_id).sum() * 0.2)
    x[:, bos_index] = boa_id

  total_steps = steps
  block_num = (x == mask_token_id).sum() // block_size  # counted after the BOA pre-fill
  if block_num * block_size < (x == mask_token_id).sum():
    block_num += 1
  input_length = input_ids.shape[-1]

  for block_idx in range(block_num):
    block_mask = torch.zeros([x.shape[-1]]).to(torch.bool)
    block_mask[input_length + block_idx * block_size: input_length + (block_idx + 1) * block_size] = True
    steps = int(block_mask.sum() / (x.shape[-1] - input_length) * total_steps)  # can be 0
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
      mask_index = (x == mask_token_id)
      if mask_index.sum() == 0:
        break
      inputs_embeds_curr = embed_tokens(x)
      inputs_embeds_curr[:, :inputs_embeds.shape[1]] = inputs_embeds

      if cfg > 0:
        input_un_x = torch.tensor(un_x).unsqueeze(0).to(x.dtype)
        input_un_x = torch.cat([input_un_x, x[:, input_ids.shape[1]:]], dim=1)
        un_inpus_embeds = embed_tokens(input_un_x)
        # Upstream builds attention_mask_cond / attention_mask_uncond here; forward_dream discards them.
        if inputs_embeds_curr.shape[1] != un_inpus_embeds.shape[1]:
          un_inpus_embeds = torch.cat([un_inpus_embeds, torch.zeros_like(
              inputs_embeds_curr[:, :inputs_embeds_curr.shape[1] - un_inpus_embeds.shape[1], :])], dim=1)
        input_inputs_embeds_curr = torch.cat([inputs_embeds_curr, un_inpus_embeds])
        model_logits = forward_dream_logits(model, input_inputs_embeds_curr)
        logits = model_logits[:1]
        un_logits = model_logits[1:]
        logits = un_logits + (cfg + 1) * (logits - un_logits)
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
      else:
        logits = forward_dream_logits(model, inputs_embeds_curr)
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

      mask_logits = logits[mask_index]
      t = timesteps[i]
      s_ = timesteps[i + 1]

      if alg == "origin":
        p_transfer = 1 - s_ / t if i < steps - 1 else 1
        x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_token_id
        transfer_index_t_s = torch.rand(*x0.shape) < p_transfer
        _, x0[transfer_index_t_s] = sample_tokens(mask_logits[transfer_index_t_s], temperature=temperature,
                                                  top_p=top_p, top_k=top_k, max_position_penalty=max_position_penalty)
        x[mask_index] = x0.clone()
      else:
        if alg == "maskgit_plus":
          confidence, x0 = sample_tokens(mask_logits, temperature=temperature, top_p=top_p, top_k=top_k,
                                         max_position_penalty=max_position_penalty)
        elif alg == "topk_margin":
          confidence, x0 = sample_tokens(mask_logits, temperature=temperature, top_p=top_p, top_k=top_k,
                                         margin_confidence=True, max_position_penalty=max_position_penalty)
        elif alg == "entropy":
          confidence, x0 = sample_tokens(mask_logits, temperature, top_p=top_p, top_k=top_k, neg_entropy=True,
                                         max_position_penalty=max_position_penalty)
        elif alg == "entropy-penalty":
          confidence, x0 = sample_tokens(
              mask_logits, temperature, top_p=top_p, top_k=top_k, neg_entropy=True,
              repeat_penalty=repeat_penalty if len(histories) != 0 else 1.0,
              past_x=histories[-1] if len(histories) != 0 else [], mask_id=mask_token_id,
              max_position_penalty=max_position_penalty)
        else:
          raise RuntimeError(f"Unknown alg: {alg}")

        block_mask_1 = block_mask[mask_index[0]]
        confidence = confidence + torch.where(block_mask_1, 0, -torch.inf)

        num_mask_token = (x[:, block_mask] == mask_token_id).sum()
        number_transfer_tokens = int(num_mask_token * (1 - s_ / t)) if i < steps - 1 else num_mask_token
        number_transfer_tokens = max(number_transfer_tokens, 1)  # 1 even when the block has no masks left:
        # all confidences are then -inf and topk picks by torch's tie order (omnidiff_jax schedule.topk_tie_rank)

        if number_transfer_tokens > 0:
          if alg_temp is None or alg_temp == 0:
            _, transfer_index = torch.topk(confidence, number_transfer_tokens)
          else:
            confidence = confidence / alg_temp
            confidence = F.softmax(confidence, dim=-1)
            transfer_index = torch.multinomial(confidence, num_samples=number_transfer_tokens)
          x0_ = torch.zeros_like(x0, dtype=torch.long) + mask_token_id
          x0_[transfer_index] = x0[transfer_index].clone()
          x[mask_index] = x0_

      histories.append(x.clone())
  return x[:, input_length:]
