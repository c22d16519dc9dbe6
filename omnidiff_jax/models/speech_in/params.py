"""Converters for the speech-input / speech-token networks: PyTorch state dicts -> our NNX parameter trees.

Sources:
  SenseVoiceSmall `model.pt` (FunASR): `embed.weight`, `encoder.{encoders0.0, encoders.{i}, tp_encoders.{i}}.*`,
    `encoder.{after_norm, tp_norm}.*`; `ctc.*` is ignored. Keys may carry a prefix (Omni's checkpoint nests
    it under e.g. `model.audio_model.model.`); the prefix is found from `encoder.after_norm.weight`.
  glm-4-voice-tokenizer (`model*.safetensors`, HF WhisperVQ): `conv{1,2}.*`, `embed_positions.weight`,
    `layers.{i}.*` for i < quantize_position, `codebook.weight`; optionally prefixed `model.encoder.` (the full
    WhisperVQ model). `embed_positions2`, `ema_*`, `layer_norm.*` and deeper layers are ignored.
  projector (Omni checkpoint): `*audio_projection.{pre_proj_layernorm.{weight,bias}, mlp.0.weight, mlp.2.weight}`.

Layouts: Linear (out, in) -> (in, out); Conv1d (O, I/groups, K) -> (K, I/groups, O); LayerNorm weight -> scale;
per-layer tensors are stacked on a leading layer axis. Every mismatch (missing key, wrong shape, unexpected
key) is collected and raised in one `CheckpointMismatchError`.

Our converted trees are stored as safetensors with '/'-joined parameter paths (`save_params`/`load_params`).
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from typing import Callable, Mapping

import numpy as np

Tensors = Mapping[str, np.ndarray]


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not fit the model; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]              # our flat parameter path
  key: str                           # their key; '{i}' for stacked per-layer tensors
  layout: str = "copy"               # 'copy' | 'linear' | 'conv1d'
  layers: tuple[int, ...] = ()       # layer indices stacked on axis 0 when key has '{i}'


# Each layout is its own inverse, so the same functions map our arrays back to theirs (projector_to_hf).
_LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv1d": lambda a: a.transpose(2, 1, 0),
}


def _linear(ours: tuple[str, ...], theirs: str, bias: bool = True, layers=()) -> list[Entry]:
  out = [Entry((*ours, "kernel"), f"{theirs}.weight", "linear", layers)]
  return out + [Entry((*ours, "bias"), f"{theirs}.bias", "copy", layers)] if bias else out


def _norm(ours: tuple[str, ...], theirs: str, layers=()) -> list[Entry]:
  return [Entry((*ours, "scale"), f"{theirs}.weight", "copy", layers),
          Entry((*ours, "bias"), f"{theirs}.bias", "copy", layers)]


def _sanm_layer(ours: str, theirs: str, layers=()) -> list[Entry]:
  o = (ours,) if ours else ()
  return (_linear((*o, "self_attn", "linear_q_k_v"), f"{theirs}.self_attn.linear_q_k_v", layers=layers)
          + _linear((*o, "self_attn", "linear_out"), f"{theirs}.self_attn.linear_out", layers=layers)
          + [Entry((*o, "self_attn", "fsmn_block", "kernel"), f"{theirs}.self_attn.fsmn_block.weight", "conv1d",
                   layers)]
          + _linear((*o, "w_1"), f"{theirs}.feed_forward.w_1", layers=layers)
          + _linear((*o, "w_2"), f"{theirs}.feed_forward.w_2", layers=layers)
          + _norm((*o, "norm1"), f"{theirs}.norm1", layers) + _norm((*o, "norm2"), f"{theirs}.norm2", layers))


def sensevoice_entries(cfg) -> list[Entry]:
  """cfg: the encoder config section (num_blocks, tp_blocks)."""
  return ([Entry(("embed", "embedding"), "embed.weight")]
          + _sanm_layer("encoders0", "encoder.encoders0.0")
          + _sanm_layer("encoders", "encoder.encoders.{i}", tuple(range(cfg.num_blocks - 1)))
          + _sanm_layer("tp_encoders", "encoder.tp_encoders.{i}", tuple(range(cfg.tp_blocks)))
          + _norm(("after_norm",), "encoder.after_norm") + _norm(("tp_norm",), "encoder.tp_norm"))


def whisper_vq_entries(cfg) -> list[Entry]:
  """cfg: the WhisperVQ encoder config section (quantize_position)."""
  layers = tuple(range(cfg.quantize_position))
  entries = [Entry(("conv1", "kernel"), "conv1.weight", "conv1d"), Entry(("conv1", "bias"), "conv1.bias"),
             Entry(("conv2", "kernel"), "conv2.weight", "conv1d"), Entry(("conv2", "bias"), "conv2.bias"),
             Entry(("embed_positions",), "embed_positions.weight"), Entry(("codebook",), "codebook.weight")]
  for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
    entries += _linear(("layers", proj), f"layers.{{i}}.self_attn.{proj}", bias=proj != "k_proj", layers=layers)
  for fc in ("fc1", "fc2"):
    entries += _linear(("layers", fc), f"layers.{{i}}.{fc}", layers=layers)
  for norm in ("self_attn_layer_norm", "final_layer_norm"):
    entries += _norm(("layers", norm), f"layers.{{i}}.{norm}", layers)
  return entries


def projector_entries() -> list[Entry]:
  return (_norm(("pre_proj_layernorm",), "pre_proj_layernorm") + _linear(("linear_1",), "mlp.0", bias=False)
          + _linear(("linear_2",), "mlp.2", bias=False))


def projector_to_hf(values: Mapping[tuple[str, ...], np.ndarray],
                    prefix: str = "model.audio_projection.") -> dict[str, np.ndarray]:
  """Our projector parameters ({path: array}, e.g. ('linear_1', 'kernel')) -> Omni's HF tensors
  ('model.audio_projection.mlp.0.weight', ...): the inverse of load_projector."""
  missing = [e.path for e in projector_entries() if e.path not in values]
  if missing:
    raise CheckpointMismatchError(f"projector: no parameter(s) {['/'.join(p) for p in missing]}")
  return {prefix + e.key: np.ascontiguousarray(_LAYOUTS[e.layout](np.asarray(values[e.path])))
          for e in projector_entries()}


def strip_prefix(tensors: Tensors, anchor: str, what: str) -> dict[str, np.ndarray]:
  """Keeps the keys under the prefix that precedes `anchor` (e.g. 'model.audio_model.model.'), prefix removed."""
  prefixes = sorted({k[:-len(anchor)] for k in tensors if k.endswith(anchor)}, key=len)
  if not prefixes:
    sample = ", ".join(sorted(tensors)[:5])
    raise CheckpointMismatchError(f"{what}: no key ending in {anchor!r} (first keys: {sample})")
  if len(prefixes) > 1:
    raise CheckpointMismatchError(f"{what}: several candidate prefixes before {anchor!r}: {prefixes}")
  p = prefixes[0]
  return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def convert(entries: list[Entry], tensors: Tensors, targets: Mapping[tuple[str, ...], tuple[int, ...]], *,
            what: str, ignore: Callable[[str], bool] = lambda k: False) -> dict[tuple[str, ...], np.ndarray]:
  """Maps their tensors to our flat paths, checking against `targets` ({our path: shape}).

  Raises CheckpointMismatchError listing every missing key, wrong shape, unexpected key and parameter of ours
  that no entry fills.
  """
  problems, out, used = [], {}, set()
  for e in entries:
    keys = [e.key.format(i=i) for i in e.layers] if "{i}" in e.key else [e.key]
    missing = [k for k in keys if k not in tensors]
    if missing:
      problems.append(f"missing {', '.join(missing)} (for {'/'.join(e.path)})")
      continue
    used.update(keys)
    want = targets.get(e.path)
    if want is None:
      problems.append(f"{e.key}: our model has no parameter {'/'.join(e.path)}")
      continue
    stacked = "{i}" in e.key
    part_shape = tuple(want[1:]) if stacked else tuple(want)
    parts = [_LAYOUTS[e.layout](np.asarray(tensors[k])) for k in keys]
    bad = [(k, p.shape) for k, p in zip(keys, parts) if tuple(p.shape) != part_shape]
    problems += [f"{k}: shape {tuple(shape)} in our layout, expected {part_shape} for {'/'.join(e.path)}"
                 for k, shape in bad]
    if not bad:
      out[e.path] = np.stack(parts) if stacked else parts[0]
  problems += [f"unexpected key {k} {tuple(np.shape(tensors[k]))}" for k in sorted(tensors)
               if k not in used and not ignore(k)]
  problems += [f"no checkpoint tensor for our parameter {'/'.join(p)}" for p in targets
               if p not in {e.path for e in entries}]
  if problems:
    raise CheckpointMismatchError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
  return out


def abstract(ctor, cfg):
  """`ctor(cfg, rngs=...)` built with shapes only (no init compute); fill it with a load_* function."""
  from flax import nnx
  return nnx.eval_shape(lambda: ctor(cfg, rngs=nnx.Rngs(0)))


def _param_state(model):
  from flax import nnx
  return dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))


def assign(model, values: Mapping[tuple[str, ...], np.ndarray]) -> None:
  """Copies converted arrays into the model's parameters in place (keeping their dtypes; the model may be
  abstract, from `abstract`)."""
  import jax.numpy as jnp
  state = _param_state(model)
  for path, value in values.items():
    state[path].set_value(jnp.asarray(value, state[path].get_value().dtype))


def _targets(model) -> dict[tuple[str, ...], tuple[int, ...]]:
  return {p: tuple(v.get_value().shape) for p, v in _param_state(model).items()}


def load_sensevoice(model, tensors: Tensors) -> None:
  """SenseVoiceSmall model.pt tensors (any prefix) -> a SenseVoiceEncoder, in place."""
  t = strip_prefix(tensors, "encoder.after_norm.weight", "SenseVoice")
  assign(model, convert(sensevoice_entries(model.cfg), t, _targets(model), what="SenseVoice",
                        ignore=lambda k: k.startswith("ctc.")))


def load_whisper_vq(model, tensors: Tensors) -> None:
  """glm-4-voice-tokenizer tensors (bare or 'model.encoder.'-prefixed) -> a WhisperVQEncoder, in place."""
  t = strip_prefix(tensors, "conv1.weight", "WhisperVQ")
  n = model.cfg.quantize_position

  def ignore(k: str) -> bool:
    if k.startswith("layers."):
      return int(k.split(".")[1]) >= n
    return k.startswith(("embed_positions2", "ema_", "layer_norm."))

  assign(model, convert(whisper_vq_entries(model.cfg), t, _targets(model), what="WhisperVQ", ignore=ignore))


def load_projector(model, tensors: Tensors) -> None:
  """Omni checkpoint tensors (keys '...audio_projection.*'; other keys ignored) -> an AudioProjector."""
  t = strip_prefix(tensors, "audio_projection.pre_proj_layernorm.weight", "projector")
  t = {k[len("audio_projection."):]: v for k, v in t.items() if k.startswith("audio_projection.")}
  assign(model, convert(projector_entries(), t, _targets(model), what="projector"))


# ----------------------------------------------------------------------------------------------------------
# Reading their files, writing ours

def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """A torch state dict file (e.g. SenseVoiceSmall model.pt) -> {key: float32/int numpy}. Needs torch."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"reading {path} needs PyTorch (pip install torch)") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for nest in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(nest), dict):
      obj = obj[nest]
  if not isinstance(obj, dict):
    raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in obj.items()
          if isinstance(v, torch.Tensor)}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file, or a directory of model*.safetensors shards -> {key: numpy} (bf16 read as fp32)."""
  from safetensors import safe_open
  files = sorted(glob.glob(os.path.join(path, "model*.safetensors"))) if os.path.isdir(path) else [path]
  if not files:
    raise FileNotFoundError(f"{path}: no model*.safetensors files")
  if importlib.util.find_spec("torch") is not None:  # torch reads bfloat16 tensors, which NumPy cannot
    framework, to_numpy = "pt", lambda v: (v.float() if v.is_floating_point() else v).numpy()
  else:
    framework, to_numpy = "np", lambda v: v
  out = {}
  for f in files:
    with safe_open(f, framework=framework) as st:
      for k in st.keys():
        out[k] = to_numpy(st.get_tensor(k))
  return out


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Dispatches on the file type: safetensors (file or shard directory) or a torch pickle."""
  if os.path.isdir(path) or path.endswith(".safetensors"):
    return read_safetensors(path)
  return read_torch_checkpoint(path)


def save_params(model, path: str) -> None:
  """Writes the model's parameters as safetensors with '/'-joined paths."""
  from safetensors.numpy import save_file
  save_file({"/".join(p): np.asarray(v.get_value()) for p, v in _param_state(model).items()}, path)


def fill_random(model, seed: int = 0) -> None:
  """Deterministic random weights in place, without compiling initialisers (demos, tests): LayerNorm scales 1,
  biases 0, every other parameter N(0, 0.02), drawn in sorted path order from numpy's PCG64(seed)."""
  rng = np.random.default_rng(seed)
  fills = {"scale": np.ones, "bias": np.zeros}
  assign(model, {path: fills[path[-1]](shape) if path[-1] in fills else 0.02 * rng.standard_normal(shape)
                 for path, shape in sorted(_targets(model).items())})


def load_params(model, path: str) -> None:
  """Reads a file written by `save_params` into the model, checking every name and shape first."""
  from safetensors.numpy import load_file
  tensors = load_file(path)
  entries = [Entry(p, "/".join(p)) for p in _targets(model)]
  assign(model, convert(entries, tensors, _targets(model), what=path))


def model_for(kind: str, cfg):
  """An abstract (unfilled) 'sensevoice' | 'whisper_vq' | 'projector' module for a speech config."""
  from omnidiff_jax.models.speech_in import adapter as audio_adapter, sensevoice, whisper_vq
  ctors = {"sensevoice": sensevoice.SenseVoiceEncoder, "whisper_vq": whisper_vq.WhisperVQEncoder,
           "projector": audio_adapter.AudioProjector}
  if kind not in ctors:
    raise ValueError(f"unknown speech model kind {kind!r}; expected one of {sorted(ctors)}")
  return abstract(ctors[kind], cfg.projector if kind == "projector" else cfg.encoder)


def convert_file(kind: str, src: str, dst: str, cfg) -> None:
  """PyTorch weights (SenseVoiceSmall model.pt, glm-4-voice-tokenizer, Omni projector) -> our safetensors.

  Raises CheckpointMismatchError naming `src` and listing every missing / unexpected / wrong-shape key.
  """
  model = model_for(kind, cfg)
  load = {"sensevoice": load_sensevoice, "whisper_vq": load_whisper_vq, "projector": load_projector}[kind]
  try:
    load(model, read_checkpoint(src))
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f"{src}: {e}") from None
  save_params(model, dst)
