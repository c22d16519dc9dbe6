"""Name map between HF Qwen2 / Dream / Omni-Diffusion state dicts and our scanned parameter tree.

HF stores a Linear weight as (out, in); our nnx.Linear kernels are (in, out), so kernels are transposed.
Decoder-layer parameters carry a leading (num_layers,) axis on our side and one HF tensor per layer.
The embedding and lm_head have padded_vocab_size rows on our side and vocab_size in HF: zero rows are added
on import and cut on export (`vocab_rows`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from omnidiff_jax.config import padded_vocab_size

_LAYER = "model.layers.{i}."


@dataclasses.dataclass(frozen=True)
class ParamName:
  path: tuple[str, ...]      # our flat nnx path, e.g. ('layers', 'mlp', 'up_proj', 'kernel')
  hf_key: str                # HF key; contains '{i}' for per-layer tensors
  transpose: bool            # HF (out, in) -> ours (in, out)
  vocab_axis: int | None = None  # our axis over the vocabulary (padded_vocab_size rows), if any

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.hf_key


def _linear(ours: str, theirs: str, bias: bool) -> list[ParamName]:
  names = [ParamName(("layers", *ours.split("/"), "kernel"), _LAYER + theirs + ".weight", True)]
  if bias:
    names.append(ParamName(("layers", *ours.split("/"), "bias"), _LAYER + theirs + ".bias", False))
  return names


def backbone_names() -> list[ParamName]:
  """Every backbone parameter, in a fixed order."""
  names = [ParamName(("embed_tokens", "embedding"), "model.embed_tokens.weight", False, vocab_axis=0)]
  for proj in ("q_proj", "k_proj", "v_proj"):
    names += _linear(f"self_attn/{proj}", f"self_attn.{proj}", bias=True)
  names += _linear("self_attn/o_proj", "self_attn.o_proj", bias=False)
  for proj in ("gate_proj", "up_proj", "down_proj"):
    names += _linear(f"mlp/{proj}", f"mlp.{proj}", bias=False)
  for norm in ("input_layernorm", "post_attention_layernorm"):
    names.append(ParamName(("layers", norm, "weight"), _LAYER + norm + ".weight", False))
  names.append(ParamName(("norm", "weight"), "model.norm.weight", False))
  names.append(ParamName(("lm_head", "kernel"), "lm_head.weight", True, vocab_axis=1))
  return names


def hf_keys(name: ParamName, num_layers: int) -> list[str]:
  return [name.hf_key.format(i=i) for i in range(num_layers)] if name.per_layer else [name.hf_key]


def transpose_2d(x: np.ndarray, out: np.ndarray | None = None, block: int = 512) -> np.ndarray:
  """x.T as a C-contiguous array, copied tile by tile (several times faster than np.ascontiguousarray(x.T)
  on large matrices). x: (R, C) -> (C, R); `out` (C, R), if given, is filled (casting to its dtype)."""
  out = np.empty(x.shape[::-1], x.dtype) if out is None else out
  for r in range(0, x.shape[0], block):
    for c in range(0, x.shape[1], block):
      out[c:c + block, r:r + block] = x[r:r + block, c:c + block].T
  return out


def vocab_rows(name: ParamName, value: np.ndarray, rows: int) -> np.ndarray:
  """`value` (our layout) with its vocabulary axis cut or zero-padded to `rows`; other parameters unchanged."""
  if name.vocab_axis is None or value.shape[name.vocab_axis] == rows:
    return value
  if value.shape[name.vocab_axis] > rows:
    return value[(slice(None),) * name.vocab_axis + (slice(0, rows),)]
  widths = [(0, 0)] * value.ndim
  widths[name.vocab_axis] = (0, rows - value.shape[name.vocab_axis])
  return np.pad(value, widths)


def to_ours(name: ParamName, get_tensor: Callable[[str], np.ndarray], num_layers: int) -> np.ndarray:
  """Reads the HF tensor(s) of one parameter and returns it in our layout (stacked over layers)."""
  parts = [get_tensor(k) for k in hf_keys(name, num_layers)]
  if name.transpose:
    parts = [transpose_2d(p) for p in parts]
  return np.stack(parts) if name.per_layer else parts[0]


def to_hf(name: ParamName, value: np.ndarray, num_layers: int) -> Iterator[tuple[str, np.ndarray]]:
  """Splits one of our parameters into its HF tensors (inverse of `to_ours`)."""
  values = list(value) if name.per_layer else [value]
  for key, v in zip(hf_keys(name, num_layers), values):
    yield key, transpose_2d(v) if name.transpose else np.ascontiguousarray(v)


def load_backbone(model, get_tensor: Callable[[str], np.ndarray]) -> None:
  """Copies HF tensors into `model` (a DreamModel) in place, keeping each parameter's dtype and sharding.

  Every problem (missing key, wrong shape) is collected and reported in one ValueError.
  """
  import jax
  from flax import nnx

  num_layers = model.cfg.num_layers
  variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  problems, values = [], {}
  for name in backbone_names():
    try:
      value = to_ours(name, get_tensor, num_layers)
    except KeyError as e:
      problems.append(f"missing key {e.args[0]!r} (for {'/'.join(name.path)})")
      continue
    target = variables[name.path].get_value()
    expected = unpadded_shape(name, target.shape, model.cfg.vocab_size)
    if value.shape != expected:
      problems.append(f"{name.hf_key}: shape {value.shape} in our layout, expected {expected}")
      continue
    values[name.path] = vocab_rows(name, value, padded_vocab_size(model.cfg))
  if problems:
    raise ValueError("cannot load the checkpoint:\n  " + "\n  ".join(problems))
  for path, value in values.items():
    target = variables[path].get_value()
    variables[path].set_value(jax.device_put(value.astype(target.dtype), target.sharding))


# Omni-Diffusion weights outside the backbone: the audio projector (converted into params/audio_projection) and
# the SenseVoice audio encoder (carried through conversion unchanged, under its HF names).
EXTRA_PREFIXES = ("model.audio_model.", "model.audio_projection.")


def is_extra(hf_key: str) -> bool:
  return hf_key.startswith(EXTRA_PREFIXES)


def unpadded_shape(name: ParamName, our_shape: tuple[int, ...], vocab_size: int) -> tuple[int, ...]:
  """Our (vocab-padded) shape of `name` with the vocabulary axis at vocab_size rows, as HF stores it."""
  shape = list(our_shape)
  if name.vocab_axis is not None:
    shape[name.vocab_axis] = vocab_size
  return tuple(shape)


def hf_shape(name: ParamName, our_shape: tuple[int, ...], vocab_size: int) -> tuple[int, ...]:
  """Shape of each HF tensor of `name`, given the shape of our (possibly layer-stacked, vocab-padded) parameter
  and the model's vocab_size (the HF row count)."""
  shape = unpadded_shape(name, our_shape, vocab_size)
  shape = shape[1:] if name.per_layer else shape
  return tuple(reversed(shape)) if name.transpose else tuple(shape)
