"""GLM-4-Voice decoder checkpoints: `flow.pt` / `hift.pt` (torch state dicts) -> our NNX speech decoder.

Our modules keep torch's parameter names and layouts (omnidiff_jax/models/speech_decoder/layers.py), so the
map is the identity on keys once weight norm is folded: old-API `<name>.weight_g` / `<name>.weight_v` (and
new-API `<name>.parametrizations.weight.original0/1`) become `<name>.weight = g * v / ||v||`, the norm taken
over every axis but 0 (torch's default dim=0: out-channels for Conv1d, in-channels for ConvTranspose1d).

`convert(flow_pt, hift_pt, out_dir)` writes `flow.safetensors` and `hift.safetensors` (folded, validated
against the config); `load_speech_decoder(cfg, ckpt_dir)` builds the models and loads them. Any mismatch
(missing, unexpected or wrongly shaped key) raises one ValueError listing all of them.
"""
from __future__ import annotations

import os
from typing import Mapping

import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from omnidiff_jax.models.speech_out.decode import SpeechDecoder, build_models

_WN_SUFFIXES = ((".weight_g", ".weight_v"), (".parametrizations.weight.original0",
                                             ".parametrizations.weight.original1"))


def fold_weight_norm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Replaces each weight-norm (g, v) pair by `weight` = g * v / ||v|| (norm over all axes but 0)."""
  out = {}
  for key, value in state.items():
    dotted = "." + key  # top-level weights have no leading module name
    for g_suffix, v_suffix in _WN_SUFFIXES:
      if dotted.endswith(v_suffix):
        break
      if dotted.endswith(g_suffix):
        name = dotted[:-len(g_suffix)]
        v = np.asarray(state[(name + v_suffix)[1:]], np.float64)
        g = np.asarray(value, np.float64)
        norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
        out[(name + ".weight")[1:]] = (g * v / norm).astype(np.float32)
        break
    else:
      out[key] = np.asarray(value, np.float32)
  return out


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """Dotted torch-style key -> shape for every nnx.Param of `model`."""
  return {".".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def check_state(model: nnx.Module, state: Mapping[str, np.ndarray], source: str) -> None:
  """Raises ValueError listing every missing, unexpected and wrongly shaped key of `state` for `model`."""
  expected = param_shapes(model)
  problems = [f"missing: {k} {expected[k]}" for k in sorted(expected.keys() - state.keys())]
  problems += [f"unexpected: {k} {tuple(state[k].shape)}" for k in sorted(state.keys() - expected.keys())]
  problems += [f"shape: {k} is {tuple(state[k].shape)}, expected {expected[k]}"
               for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k]]
  if problems:
    raise ValueError(f"{source} does not match the {type(model).__name__} config ({len(problems)} problems):\n  "
                     + "\n  ".join(problems))


def load_state(model: nnx.Module, state: Mapping[str, np.ndarray], source: str = "state dict") -> None:
  """Folds weight norm, validates, and writes `state` (torch key -> array) into `model` in place."""
  state = fold_weight_norm(state)
  check_state(model, state, source)
  params = nnx.state(model, nnx.Param)
  flat = [(path, v.replace(jnp.asarray(state[".".join(map(str, path))], v.dtype)))
          for path, v in nnx.to_flat_state(params)]
  nnx.update(model, nnx.from_flat_state(flat))


def torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torch state dict file (needs torch) as numpy arrays."""
  import torch  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file (expected a torch state dict such as flow.pt)")
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state dict (mapping of name -> tensor), got {type(state).__name__}")
  return {k: v.detach().float().numpy() for k, v in state.items()}


def convert(cfg, flow_pt: str, hift_pt: str, out_dir: str) -> None:
  """flow.pt + hift.pt -> out_dir/{flow,hift}.safetensors (weight norm folded, checked against `cfg`)."""
  flow, hift = nnx.eval_shape(lambda: build_models(cfg))
  os.makedirs(out_dir, exist_ok=True)
  for name, model, src in (("flow", flow, flow_pt), ("hift", hift, hift_pt)):
    state = fold_weight_norm(torch_state_dict(src))
    check_state(model, state, src)
    safetensors.numpy.save_file(state, os.path.join(out_dir, f"{name}.safetensors"))


def load_speech_decoder(cfg, ckpt_dir: str):
  """Builds (FlowModel, HiFTGenerator) from `cfg` and loads ckpt_dir/{flow,hift}.safetensors."""
  flow, hift = build_models(cfg)
  for name, model in (("flow", flow), ("hift", hift)):
    path = os.path.join(ckpt_dir, f"{name}.safetensors")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: run `python tools/convert_checkpoint.py speech-decoder` on "
                              "flow.pt/hift.pt")
    load_state(model, safetensors.numpy.load_file(path), path)
  return flow, hift


def load_decoder(cfg, ckpt_dir: str, **kwargs) -> SpeechDecoder:
  """A SpeechDecoder with the converted weights of ckpt_dir (kwargs: SpeechDecoder options, e.g. token_bucket)."""
  return SpeechDecoder(cfg, *load_speech_decoder(cfg, ckpt_dir), **kwargs)
