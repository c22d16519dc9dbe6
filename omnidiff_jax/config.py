"""Config building blocks shared by the `configs/*.py` files (big_vision style `get_config()`).

A full config has four sections:
  vocab: the token-id layout (text ids, 21 multimodal specials, speech codes, image codes).
  model: the transformer shape, dtypes, attention kernel and remat policy.
  mesh:  the (data, fsdp, tensor) device mesh; -1 on one axis takes the remaining devices.
  run:   settings of the main job (batch, sequence length, seed).
"""
from __future__ import annotations

import ml_collections

# Number of multimodal special tokens upstream adds after the text vocabulary (151667..151687).
NUM_OMNI_SPECIALS = 21
# Default of model.vocab_pad_multiple (see padded_vocab_size); also used for configs stored without the field.
VOCAB_PAD_MULTIPLE = 128


def vocab_config(*, text_size: int, num_specials: int, num_audio_codes: int, num_image_codes: int,
                 size: int) -> ml_collections.ConfigDict:
  """Vocabulary layout. `size` is the number of embedding rows (>= the ids used)."""
  used = text_size + num_specials + num_audio_codes + num_image_codes
  if size < used:
    raise ValueError(f"vocab size {size} is smaller than the {used} ids of the layout")
  return ml_collections.ConfigDict(dict(
      text_size=text_size, num_specials=num_specials, num_audio_codes=num_audio_codes,
      num_image_codes=num_image_codes, size=size))


def model_config(*, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 intermediate_size: int, vocab_size: int, rope_theta: float = 1e6,
                 rms_norm_eps: float = 1e-6) -> ml_collections.ConfigDict:
  """Qwen2-shaped bidirectional transformer (Dream / Omni-Diffusion backbone)."""
  if num_heads % num_kv_heads:
    raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
  return ml_collections.ConfigDict(dict(
      hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=head_dim, intermediate_size=intermediate_size, vocab_size=vocab_size, rope_theta=rope_theta,
      rms_norm_eps=rms_norm_eps, initializer_range=0.02,
      # The embedding and lm_head have vocab_size rounded up to a multiple of this many rows (padded_vocab_size).
      vocab_pad_multiple=VOCAB_PAD_MULTIPLE,
      # Storage dtype of the parameters and dtype of the matmuls / activations.
      param_dtype="float32", dtype="bfloat16",
      # 'xla' | 'cudnn' (jax.nn.dot_product_attention implementations) | 'splash' (TPU Pallas kernel, chosen
      # for the mesh's devices; lengths padded to multiples of 128).
      attention_impl="xla",
      # Run Pallas kernels (splash) in the interpreter: for tests off TPU. Without it, splash on devices other
      # than TPU is an error.
      attention_interpret=False,
      # See omnidiff_jax.models.dream.modeling.REMAT_POLICIES.
      remat_policy="none",
      # None, or the speech-input projector (configs/sensevoice.py projector_config, hidden_size equal to
      # the backbone's): DreamModel then owns `audio_projection` (see DreamModel.embed_with_audio).
      audio_projector=None,
  ))


def padded_vocab_size(model_cfg: ml_collections.ConfigDict) -> int:
  """Rows of the embedding and lm_head: model.vocab_size rounded up to model.vocab_pad_multiple (MaxText-like).

  Omni's 176,264 ids are not divisible by 16, so a tensor axis of 16 could not split the vocabulary; with the
  default multiple of 128 every power-of-two tensor size up to 128 divides the rows. The padding rows are zero
  (initialised so, zero-padded on HF import, cut on export: HF files keep vocab_size rows), never looked up
  (DreamModel.embed), and their logits are masked (DreamModel.logits), so they are never sampled nor scored.
  """
  multiple = int(model_cfg.get("vocab_pad_multiple", VOCAB_PAD_MULTIPLE))
  if multiple < 1:
    raise ValueError(f"model.vocab_pad_multiple must be a positive integer, got {multiple}")
  return -(-int(model_cfg.vocab_size) // multiple) * multiple


def base_config(vocab: ml_collections.ConfigDict, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.vocab = vocab
  cfg.model = model
  cfg.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  cfg.run = ml_collections.ConfigDict(dict(batch_size=8, seq_len=256, seed=0, warmup_steps=2, timed_steps=5))
  return cfg


def qwen25_7b_config(vocab: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The Qwen2.5-7B shape used by Dream-7B and Omni-Diffusion for inference: bf16 weights and compute, full
  remat. Training keeps f32 weights (configs/stages.py, MIXED_PRECISION)."""
  model = model_config(hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                       intermediate_size=18944, vocab_size=vocab.size)
  model.param_dtype = "bfloat16"
  model.remat_policy = "full"
  return base_config(vocab, model)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """get_config() of a config file, big_vision style: 'configs/magvit.py' or 'configs/magvit.py:tiny'
  (the part after ':' is passed as get_config's argument)."""
  import importlib.util
  import os

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
