"""The PyTorch oracle for MAGVIT-v2: upstream's own modules, imported from a directory given at run time.

The upstream code is never committed. Extract it (Omni-Diffusion @ c4f4625, identical to showlab/Show-o
models/) to a scratch directory first:

  mkdir -p /tmp/magvit_upstream && for f in common_modules.py modeling_magvitv2.py; do
    git -C <Omni-Diffusion git dir> show HEAD:omni_diffusion/models/magvit/$f > /tmp/magvit_upstream/$f; done

Only the network code is imported. Upstream's `modeling_utils` (a diffusers ModelMixin/ConfigMixin copy for
from_pretrained) and `misc` (omegaconf/jaxtyping/typeguard type aliases) hold no math and are replaced by
minimal stand-ins; `einops` is stubbed when missing, as only the unused 3D/depth-to-space modules use it.
"""
from __future__ import annotations

import importlib
import sys
import types
import typing

import numpy as np

_PACKAGE = "magvit_upstream"


def _stub(name: str, **attrs) -> types.ModuleType:
  module = types.ModuleType(name)
  module.__dict__.update(attrs)
  sys.modules[name] = module
  return module


def _unused(*args, **kwargs):
  raise NotImplementedError("einops stand-in: only upstream's unused 3D / depth-to-space modules need einops")


def load_upstream(upstream_dir: str) -> types.ModuleType:
  """Imports upstream's modeling_magvitv2 from `upstream_dir` and returns the module."""
  import torch

  if _PACKAGE + ".modeling_magvitv2" in sys.modules:
    return sys.modules[_PACKAGE + ".modeling_magvitv2"]
  package = _stub(_PACKAGE)
  package.__path__ = [upstream_dir]
  _stub(_PACKAGE + ".modeling_utils", ModelMixin=torch.nn.Module, ConfigMixin=object,
        register_to_config=lambda fn: fn)
  _stub(_PACKAGE + ".misc", **{n: getattr(typing, n) for n in ("Any", "Dict", "List", "Optional", "Tuple", "Union")})
  try:
    importlib.import_module("einops")
  except ImportError:
    _stub("einops", rearrange=_unused, repeat=_unused)
    _stub("einops.layers")
    _stub("einops.layers.torch", Rearrange=_unused)
  return importlib.import_module(_PACKAGE + ".modeling_magvitv2")


def build(upstream, model_cfg, state_dict: dict[str, np.ndarray]):
  """Upstream MAGVITv2 with the shape of `model_cfg`, loaded from a torch-layout numpy state dict (strict,
  except for the LFQ buffers, which the module builds itself). Returns the module in eval mode."""
  import torch

  from omnidiff_jax.models.magvit import params as magvit_ckpt

  class Reference(upstream.MAGVITv2):
    def __init__(self):
      torch.nn.Module.__init__(self)  # upstream MAGVITv2() takes no arguments: build the parts directly
      kw = dict(ch=model_cfg.ch, z_channels=model_cfg.z_channels, in_ch=model_cfg.in_channels,
                out_ch=model_cfg.out_channels)
      self.encoder = upstream.VQGANEncoder(ch_mult=list(model_cfg.encoder_ch_mult),
                                           num_res_blocks=list(model_cfg.encoder_num_res_blocks), **kw)
      self.decoder = upstream.VQGANDecoder(ch_mult=list(model_cfg.decoder_ch_mult),
                                           num_res_blocks=list(model_cfg.decoder_num_res_blocks), **kw)
      self.quantize = upstream.LFQuantizer(codebook_dim=model_cfg.z_channels)

  model = Reference()
  result = model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=False)
  if result.unexpected_keys or set(result.missing_keys) - set(magvit_ckpt.IGNORED_KEYS):
    raise ValueError(f"name map does not match upstream: {result}")
  return model.eval()
