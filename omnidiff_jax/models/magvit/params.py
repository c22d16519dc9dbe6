"""MAGVIT-v2 checkpoints: the PyTorch `showlab/magvitv2` state dict <-> our MagvitV2 parameter tree.

Our module tree mirrors the torch module names, so the name map is derived from the tree itself:
  ('encoder', 'down', 0, 'block', 1, 'conv1', 'kernel') <-> 'encoder.down.0.block.1.conv1.weight'
and each parameter has one of three layouts:
  conv    3x3 nnx.Conv kernel (kH, kW, I, O)  <-  torch Conv2d weight (O, I, kH, kW)
  linear  1x1 conv as nnx.Linear (I, O)       <-  torch Conv2d weight (O, I, 1, 1)
  vector  conv/linear bias, GroupNorm scale/bias (C,)  <-  the same torch tensor ('scale' is torch 'weight')
The LFQ buffers `quantize.embedding` / `quantize.power_vals` are regenerated, never loaded.

A converted checkpoint is a safetensors file of our arrays keyed by '/'-joined paths ('encoder/conv_in/kernel').
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np

# Buffers of upstream's LFQuantizer: derived from the bit count, so accepted in a checkpoint and ignored.
IGNORED_KEYS = ("quantize.embedding", "quantize.power_vals")
# File names looked up when a checkpoint directory (e.g. an HF snapshot of showlab/magvitv2) is given.
CHECKPOINT_FILES = ("pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.safetensors",
                    "pytorch_model.bin", "diffusion_pytorch_model.bin")
FORMAT = "omnidiff_jax.magvit"


@dataclasses.dataclass(frozen=True)
class ParamName:
  path: tuple[str | int, ...]  # our flat nnx path
  shape: tuple[int, ...]       # our shape
  layout: str                  # 'conv' | 'linear' | 'vector'

  @property
  def key(self) -> str:
    """Our key in a converted checkpoint."""
    return "/".join(map(str, self.path))

  @property
  def torch_key(self) -> str:
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[self.path[-1]]
    return ".".join(map(str, self.path[:-1])) + "." + leaf

  @property
  def torch_shape(self) -> tuple[int, ...]:
    if self.layout == "conv":
      kh, kw, i, o = self.shape
      return (o, i, kh, kw)
    if self.layout == "linear":
      i, o = self.shape
      return (o, i, 1, 1)
    return self.shape


def param_names(model_cfg) -> list[ParamName]:
  """Every MagvitV2 parameter for `model_cfg` (the model section of configs/magvit.py), in tree order."""
  from flax import nnx

  from omnidiff_jax.models.magvit import modeling as magvit

  abstract = nnx.eval_shape(lambda: magvit.MagvitV2(model_cfg, rngs=nnx.Rngs(0)))
  names = []
  for path, variable in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
    shape = tuple(variable.get_value().shape)
    layout = "vector" if len(shape) == 1 else {4: "conv", 2: "linear"}[len(shape)]
    names.append(ParamName(tuple(path), shape, layout))
  return names


def to_ours(name: ParamName, tensor: np.ndarray) -> np.ndarray:
  """One torch tensor (in `name.torch_shape`) -> our layout."""
  if name.layout == "conv":
    return np.ascontiguousarray(tensor.transpose(2, 3, 1, 0))
  if name.layout == "linear":
    return np.ascontiguousarray(tensor.reshape(tensor.shape[:2]).T)
  return tensor


def to_torch(name: ParamName, value: np.ndarray) -> np.ndarray:
  """Inverse of `to_ours`."""
  if name.layout == "conv":
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
  if name.layout == "linear":
    return np.ascontiguousarray(value.T[:, :, None, None])
  return value


def _check_keys(what: str, expected: Mapping[str, tuple[int, ...]], arrays: Mapping[str, np.ndarray],
                ignored: tuple[str, ...] = ()) -> None:
  """Raises one ValueError listing every missing, unexpected (not in `ignored`) and wrong-shaped key."""
  problems = [f"missing key {k!r} (expected shape {shape})" for k, shape in expected.items() if k not in arrays]
  problems += [f"unexpected key {k!r} with shape {tuple(np.shape(v))}" for k, v in arrays.items()
               if k not in expected and k not in ignored]
  problems += [f"{k}: shape {tuple(np.shape(arrays[k]))}, expected {shape}" for k, shape in expected.items()
               if k in arrays and tuple(np.shape(arrays[k])) != shape]
  if problems:
    raise ValueError(f"{what} does not match the model config ({len(problems)} problems):\n  "
                     + "\n  ".join(problems))


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model_cfg) -> dict[str, np.ndarray]:
  """torch state dict -> {our '/'-joined key: array in our layout}.

  Raises one ValueError listing every missing key, unexpected key and wrong-shaped tensor.
  """
  names = param_names(model_cfg)
  _check_keys("MAGVIT-v2 checkpoint", {n.torch_key: n.torch_shape for n in names}, state_dict, IGNORED_KEYS)
  return {n.key: to_ours(n, np.asarray(state_dict[n.torch_key])) for n in names}


def _checkpoint_file(path: str) -> str:
  if os.path.isdir(path):
    for name in CHECKPOINT_FILES:
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise FileNotFoundError(f"{path}: no MAGVIT-v2 weights found; looked for {', '.join(CHECKPOINT_FILES)}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file")
  return path


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict as numpy arrays from a .safetensors file, a torch .bin/.pt/.pth file or a directory
  holding one of CHECKPOINT_FILES. Torch files need `torch` (reading uses weights_only=True)."""
  path = _checkpoint_file(path)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"{path}: reading a torch pickle needs `torch`; or convert it to .safetensors") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
  return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}


def convert_magvit(src_path: str, dst_path: str, model_cfg=None) -> int:
  """Converts a showlab/magvitv2 torch checkpoint (file or directory) to our safetensors file.

  model_cfg defaults to the released model (omnidiff_jax.models.magvit.modeling.model_config()). Returns the number
  of tensors written.
  """
  from safetensors.numpy import save_file

  from omnidiff_jax.models.magvit import modeling as magvit

  model_cfg = model_cfg if model_cfg is not None else magvit.model_config()
  arrays = convert_state_dict(read_state_dict(src_path), model_cfg)
  os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
  save_file(arrays, dst_path, metadata={"format": FORMAT, "source": os.path.basename(os.path.normpath(src_path))})
  return len(arrays)


def build_model(model_cfg, arrays: Mapping[str, np.ndarray]):
  """A MagvitV2 holding `arrays` ({our '/'-joined key: array in our layout}), built from an abstract model so
  no random initialisation runs. Raises one ValueError listing every missing, unexpected and wrong-shaped key.
  """
  import jax.numpy as jnp
  from flax import nnx

  from omnidiff_jax.models.magvit import modeling as magvit

  _check_keys("MAGVIT-v2 weights", {n.key: n.shape for n in param_names(model_cfg)}, arrays)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: magvit.MagvitV2(model_cfg, rngs=nnx.Rngs(0))))
  flat = nnx.to_flat_state(state)
  for path, variable in flat:
    abstract = variable.get_value()
    variable.set_value(jnp.asarray(arrays["/".join(map(str, path))], abstract.dtype))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def model_from_torch_state_dict(model_cfg, state_dict: Mapping[str, np.ndarray]):
  """A MagvitV2 holding a torch-layout state dict (numpy arrays)."""
  return build_model(model_cfg, convert_state_dict(state_dict, model_cfg))


def random_model(model_cfg, seed: int = 0):
  """A MagvitV2 with the deterministic random weights of `random_torch_state_dict` (tests, benchmarks)."""
  return model_from_torch_state_dict(model_cfg, random_torch_state_dict(model_cfg, seed))


def load_magvit(model_cfg, path: str):
  """A MagvitV2 loaded from our converted safetensors file, or from a torch checkpoint (file or directory, see
  `read_state_dict`) converted on the fly."""
  from safetensors import safe_open
  from safetensors.numpy import load_file

  path = _checkpoint_file(path)
  if path.endswith(".safetensors"):
    with safe_open(path, framework="numpy") as f:
      if (f.metadata() or {}).get("format") == FORMAT:
        return build_model(model_cfg, load_file(path))
  return model_from_torch_state_dict(model_cfg, read_state_dict(path))


def random_torch_state_dict(model_cfg, seed: int = 0) -> dict[str, np.ndarray]:
  """A deterministic random state dict in the torch layout, for parity fixtures and benchmarks.

  Conv/linear weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), GroupNorm scales ~ 1 + N(0, 0.1^2), so the
  activations stay O(1) through the network like a trained one's. Keys are drawn in sorted order from
  numpy's PCG64(seed), independent of torch.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for name in sorted(param_names(model_cfg), key=lambda n: n.torch_key):
    shape = name.torch_shape
    if name.layout != "vector":
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    elif name.path[-1] == "scale":
      value = 1 + 0.1 * rng.standard_normal(shape)
    else:
      value = 0.1 * rng.standard_normal(shape)
    out[name.torch_key] = value.astype(np.float32)
  return out
