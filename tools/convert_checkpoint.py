"""Checkpoint conversion: the one entry point for every network's weights (omnidiff_jax.checkpoints.convert and
the parameter mappings of omnidiff_jax.models.*).

  python tools/convert_checkpoint.py SUBCOMMAND POSITIONAL... [--flags]

  # HF Dream / Omni-Diffusion directory -> Orbax checkpoint (second form: bf16, sharded over 8 fake CPU devices)
  python tools/convert_checkpoint.py hf-to-orbax /ckpt/Omni-Diffusion /ckpt/omni_orbax
  python tools/convert_checkpoint.py hf-to-orbax /ckpt/Omni-Diffusion /ckpt/omni_orbax --config=configs/omni_7b.py \
      --dtype=bfloat16 --mesh=1,-1,1 --cpu_devices=8
  # Orbax -> sharded HF safetensors + index + config.json (loadable by PyTorch / serving stacks); a training
  # run's checkpoints directory exports too (its newest step: backbone + trained audio projector)
  python tools/convert_checkpoint.py orbax-to-hf /ckpt/omni_orbax /ckpt/omni_hf --max_shard_size=5GB
  # Dream layout (152,064 rows) -> Omni layout (176,264 rows); new rows ~ N(0, 0.02)
  python tools/convert_checkpoint.py expand-vocab /ckpt/dream_orbax /ckpt/dream_omni_vocab --seed=0
  # Tokenizer networks -> our safetensors parameter files
  python tools/convert_checkpoint.py magvit ~/magvitv2 magvit.safetensors
  python tools/convert_checkpoint.py speech-in SenseVoiceSmall/model.pt sensevoice.safetensors --kind=sensevoice
  python tools/convert_checkpoint.py speech-in glm-4-voice-tokenizer/ whisper_vq.safetensors --kind=whisper_vq
  python tools/convert_checkpoint.py speech-decoder glm-4-voice-decoder/flow.pt glm-4-voice-decoder/hift.pt decoder/

--config takes a config file[:arg] (and --config.* overrides); without it each subcommand uses its default:
hf-to-orbax reads config.json, expand-vocab the Omni vocabulary, magvit configs/magvit.py, speech-in
configs/whisper_vq.py or configs/sensevoice.py (by --kind), speech-decoder configs/speech_decoder.py.
JAX is imported only after --cpu_devices has set XLA_FLAGS.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:arg]; default: the subcommand's (above).")
_DTYPE = flags.DEFINE_string("dtype", None, "hf-to-orbax / orbax-to-hf: store tensors in this dtype (bfloat16, "
                             "float32); default: as stored.")
_MESH = flags.DEFINE_string("mesh", None, "hf-to-orbax: data,fsdp,tensor mesh to write a sharded layout over, e.g. "
                            "1,-1,1.")
_MAX_SHARD_SIZE = flags.DEFINE_string("max_shard_size", "5GB", "orbax-to-hf: largest shard file, e.g. 5GB, 500MB.")
_SEED = flags.DEFINE_integer("seed", 0, "expand-vocab: seed of the new rows.")
_STD = flags.DEFINE_float("std", 0.02, "expand-vocab: standard deviation of the new rows.")
_KIND = flags.DEFINE_enum("kind", None, ["sensevoice", "whisper_vq", "projector"], "speech-in: which network.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Fake this many CPU devices (a sharded layout without "
                                    "accelerators); 0 uses the real devices.")


def _config(default: str | None):
  """--config, else the default config file (None: no config)."""
  if _CONFIG.value is not None or default is None:
    return _CONFIG.value
  from omnidiff_jax.config import load_config_file
  return load_config_file(os.path.join(CONFIG_DIR, default))


def _mesh():
  if not _MESH.value:
    return None
  import ml_collections
  from omnidiff_jax import sharding
  sizes = [int(x) for x in _MESH.value.split(",")]
  if len(sizes) != 3:
    raise app.UsageError(f"--mesh={_MESH.value!r}: expected three sizes data,fsdp,tensor such as 1,-1,1")
  return sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, sizes))))


def hf_to_orbax(hf_dir: str, out: str) -> None:
  """HF safetensors directory (Dream 152,064 or Omni 176,264 vocab) -> Orbax checkpoint, streamed."""
  from omnidiff_jax.checkpoints import convert
  info = convert.hf_to_orbax(hf_dir, out, config=_config(None), dtype=_DTYPE.value, mesh=_mesh())
  print(f"wrote {out}: vocab {info['config']['vocab']['size']}, {info['config']['model']['num_layers']} layers, "
        f"dtype {info['config']['model']['param_dtype']}")
  projector = info["config"]["model"].get("audio_projector")
  if projector:
    print(f"audio projector {projector['input_size']} -> {projector['hidden_size']} (params/audio_projection)")
  if info["extra_keys"]:
    print(f"carried through {len(info['extra_keys'])} extra Omni tensors:")
    for key in info["extra_keys"]:
      print(f"  {key}")


def orbax_to_hf(ckpt: str, out_dir: str) -> None:
  """Orbax checkpoint (root or step directory) -> sharded HF safetensors + index + config.json."""
  from omnidiff_jax.checkpoints import convert
  keys = convert.orbax_to_hf(ckpt, out_dir, max_shard_size=_MAX_SHARD_SIZE.value, dtype=_DTYPE.value)
  print(f"wrote {len(keys)} tensors to {out_dir}")


def expand_vocab(src: str, out: str) -> None:
  """Grow embedding and lm_head to a larger vocab (Dream -> Omni); new rows ~ N(0, std), seeded."""
  from omnidiff_jax.checkpoints import convert
  cfg = _config(None)
  convert.expand_vocab(src, out, vocab=None if cfg is None else cfg.vocab, seed=_SEED.value, std=_STD.value)
  print(f"wrote {out}")


def magvit(src: str, dst: str) -> None:
  """showlab/magvitv2 PyTorch checkpoint (file or directory) -> our MAGVIT-v2 safetensors file."""
  from omnidiff_jax.models.magvit import params as magvit_params
  count = magvit_params.convert_magvit(src, dst, _config("magvit.py").model)
  print(f"converted {count} tensors: {src} -> {dst}")


def speech_in(src: str, dst: str) -> None:
  """SenseVoiceSmall model.pt / glm-4-voice-tokenizer / Omni projector weights -> our safetensors file."""
  from omnidiff_jax.models.speech_in import params as speech_in_params
  if _KIND.value is None:
    raise app.UsageError("speech-in needs --kind=sensevoice|whisper_vq|projector")
  speech_in_params.convert_file(_KIND.value, src, dst,
                                _config("whisper_vq.py" if _KIND.value == "whisper_vq" else "sensevoice.py"))
  print(f"wrote {dst}")


def speech_decoder(flow_pt: str, hift_pt: str, out_dir: str) -> None:
  """GLM-4-Voice decoder flow.pt + hift.pt -> our {flow,hift}.safetensors (weight norm folded)."""
  from omnidiff_jax.models.speech_out import params as speech_out_params
  speech_out_params.convert(_config("speech_decoder.py"), flow_pt, hift_pt, out_dir)
  print(f"wrote {out_dir}/flow.safetensors and hift.safetensors")


SUBCOMMANDS = {"hf-to-orbax": hf_to_orbax, "orbax-to-hf": orbax_to_hf, "expand-vocab": expand_vocab,
               "magvit": magvit, "speech-in": speech_in, "speech-decoder": speech_decoder}


def main(argv):
  if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(f"the first argument must be a subcommand: {', '.join(SUBCOMMANDS)}")
  run, args = SUBCOMMANDS[argv[1]], argv[2:]
  wanted = run.__code__.co_varnames[:run.__code__.co_argcount]
  if len(args) != len(wanted):
    raise app.UsageError(f"{argv[1]} takes {' '.join(a.upper() for a in wanted)} ({run.__doc__}); got {args}")
  if _CPU_DEVICES.value:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(_CPU_DEVICES.value)
  from omnidiff_jax.checkpoints import CheckpointError
  try:
    run(*args)
  except (CheckpointError, ValueError, FileExistsError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
