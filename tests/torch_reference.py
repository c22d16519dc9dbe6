"""PyTorch oracle for the backbone: transformers' Qwen2 run bidirectionally, masks given as float additive masks.

transformers 5's eager attention ADDS a 4D attention mask to the scores: a bool mask adds True = 1 / False = 0
instead of masking, so every mask here is float (0 = attend, finfo.min = masked); tests/test_dream_parity.py
checks that a masked key changes nothing.
"""
from __future__ import annotations

import ml_collections
import numpy as np
import torch
import transformers


def qwen2_config(model_cfg: ml_collections.ConfigDict) -> transformers.Qwen2Config:
  c = model_cfg
  return transformers.Qwen2Config(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
      num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
      head_dim=c.head_dim, rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
      max_position_embeddings=4096, attn_implementation="eager", torch_dtype="float32")


def random_qwen2(model_cfg: ml_collections.ConfigDict, seed: int = 0) -> transformers.Qwen2ForCausalLM:
  """A randomly initialised Qwen2 with non-trivial norm weights and biases (so the test sees them)."""
  torch.manual_seed(seed)
  model = transformers.Qwen2ForCausalLM(qwen2_config(model_cfg)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
  """(B, 1, Lq, Lk) bool, True = may attend -> float32 additive mask: 0 where allowed, finfo.min elsewhere."""
  return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
  """Packed rows: query i attends to key j iff they share a non-zero segment id. (B, L) int -> (B, 1, L, L) float.
  A padding query (segment 0) attends to nothing that is real; its output is garbage and unused."""
  seg = torch.as_tensor(segment_ids)
  return additive_mask(((seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0))[:, None])


def bidirectional_logits(model: transformers.Qwen2ForCausalLM, ids: np.ndarray,
                         segment_ids: np.ndarray | None = None, positions: np.ndarray | None = None) -> np.ndarray:
  """Non-causal attention (within segments when segment_ids (B, L) is given); positions (B, L), default
  arange(L). ids: (B, L) -> logits (B, L, V)."""
  b, l = ids.shape
  mask = additive_mask(torch.ones(b, 1, l, l, dtype=torch.bool)) if segment_ids is None else segment_mask(
      torch.as_tensor(segment_ids))
  position_ids = None if positions is None else torch.as_tensor(positions, dtype=torch.long)
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(ids), attention_mask=mask, position_ids=position_ids)
  return out.logits.float().numpy()


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
