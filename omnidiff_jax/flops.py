"""FLOP counts for MFU. Attention is bidirectional, so the full L x L score and value matmuls count; lm_head
counts the padded logit width the model computes (config.padded_vocab_size), as MaxText counts its padded
vocabulary."""
from __future__ import annotations

import ml_collections

from omnidiff_jax.config import padded_vocab_size


def matmul_params(model_cfg: ml_collections.ConfigDict) -> int:
  """Weights that take part in a matmul per token: all layer projections plus lm_head (its padded rows: the
  model computes those logits too; not the embedding)."""
  c = model_cfg
  attn = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  mlp = 3 * c.hidden_size * c.intermediate_size
  return c.num_layers * (attn + mlp) + c.hidden_size * padded_vocab_size(c)


def flops_per_token(model_cfg: ml_collections.ConfigDict, seq_len: int, training: bool = True) -> float:
  """Model FLOPs per token for a sequence of `seq_len` tokens.

  Forward: 2 * matmul params + 4 * seq_len * num_heads * head_dim per layer (QK^T and PV over all
  seq_len keys, no causal halving). Training (forward + backward) is 3x the forward.
  """
  c = model_cfg
  forward = 2 * matmul_params(c) + 4 * seq_len * c.num_heads * c.head_dim * c.num_layers
  return float(3 * forward if training else forward)
