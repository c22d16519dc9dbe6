"""7B shapes (abstract, no memory) and the FLOP count used for MFU."""
import jax
import numpy as np
from configs import dream_7b, omni_7b
from flax import nnx

from omnidiff_jax import flops
from omnidiff_jax.models.dream.modeling import DreamModel

PER_LAYER = 233_057_792  # Qwen2.5-7B decoder layer incl. q/k/v biases and both norms (reference 2.1)
LAYER_MATMUL = 3584 * 128 * (2 * 28 + 2 * 4) + 3 * 3584 * 18944


def _abstract_param_count(cfg):
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: DreamModel(cfg.model, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_7b_parameter_counts():
  """Embedding and lm_head rows are padded to a multiple of 128 (176,264 -> 176,384; 152,064 already is one);
  the padding rows are zeros that are never scored."""
  assert _abstract_param_count(omni_7b.get_config()) == 28 * PER_LAYER + 2 * 176_384 * 3584 + 3584
  assert _abstract_param_count(dream_7b.get_config()) == 28 * PER_LAYER + 2 * 152_064 * 3584 + 3584


def test_flops_per_token_counts_full_attention_and_the_padded_logits():
  """lm_head counts the 176,384 padded logit rows the model computes, not the 176,264 real ids."""
  cfg = omni_7b.get_config().model
  assert flops.matmul_params(cfg) == 28 * LAYER_MATMUL + 3584 * 176_384
  seq = 3072
  forward = 2 * (28 * LAYER_MATMUL + 3584 * 176_384) + 4 * seq * 28 * 128 * 28
  assert flops.flops_per_token(cfg, seq, training=False) == forward
  assert flops.flops_per_token(cfg, seq) == 3 * forward
  # 6 x 7.157B matmul weights = 42.9 GFLOP plus 3.7 GFLOP of full attention at 3072 tokens.
  assert 46.6e9 < flops.flops_per_token(cfg, seq) < 46.7e9
  # Dream's 152,064 rows are already a multiple of 128: nothing added.
  assert flops.matmul_params(dream_7b.get_config().model) == 28 * LAYER_MATMUL + 3584 * 152_064
