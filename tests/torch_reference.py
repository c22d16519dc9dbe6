"""PyTorch oracle for the backbone: transformers' Qwen2 run with full bidirectional attention."""
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


def bidirectional_logits(model: transformers.Qwen2ForCausalLM, ids: np.ndarray) -> np.ndarray:
  """Full (non-causal) attention over the whole row, positions arange(L). ids: (B, L) -> (B, L, V)."""
  b, l = ids.shape
  mask = torch.ones(b, 1, l, l, dtype=torch.bool)
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(ids), attention_mask=mask)
  return out.logits.float().numpy()


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
