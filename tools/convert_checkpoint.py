"""Checkpoint conversion CLI (thin wrapper over omnidiff_jax.checkpoints.convert).

  # HF Dream / Omni-Diffusion directory -> Orbax checkpoint (second form: bf16, sharded over 8 fake CPU devices)
  python tools/convert_checkpoint.py hf-to-orbax /ckpt/Omni-Diffusion /ckpt/omni_orbax
  python tools/convert_checkpoint.py hf-to-orbax /ckpt/Omni-Diffusion /ckpt/omni_orbax --config configs/omni_7b.py
      --dtype bfloat16 --mesh 1,-1,1 --cpu-devices 8
  # Orbax -> sharded HF safetensors + index + config.json (loadable by PyTorch / serving stacks); a training
  # run's checkpoints directory exports too (its newest step: backbone + trained audio projector)
  python tools/convert_checkpoint.py orbax-to-hf /ckpt/omni_orbax /ckpt/omni_hf --max-shard-size 5GB
  python tools/convert_checkpoint.py orbax-to-hf /work/omni/stage3/checkpoints /ckpt/omni_stage3_hf
  # Dream layout (152,064 rows) -> Omni layout (176,264 rows); new rows ~ N(0, 0.02)
  python tools/convert_checkpoint.py expand-vocab /ckpt/dream_orbax /ckpt/dream_omni_vocab --seed 0
  # Tokenizer networks -> our safetensors parameter files
  python tools/convert_checkpoint.py magvit ~/magvitv2 magvit.safetensors
  python tools/convert_checkpoint.py speech-in --kind sensevoice SenseVoiceSmall/model.pt sensevoice.safetensors
  python tools/convert_checkpoint.py speech-in --kind whisper_vq glm-4-voice-tokenizer/ whisper_vq.safetensors
  python tools/convert_checkpoint.py speech-decoder glm-4-voice-decoder/flow.pt glm-4-voice-decoder/hift.pt decoder/

Adding a subcommand: write one function `def name(parser) -> run`, decorated with `@subcommand("name")`,
that adds its arguments to `parser` and returns `run(args)`. Its docstring is the --help text.
JAX is imported only inside `run`, after --cpu-devices has set XLA_FLAGS.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

Runner = Callable[[argparse.Namespace], None]
SUBCOMMANDS: dict[str, Callable[[argparse.ArgumentParser], Runner]] = {}


def subcommand(name: str):
  """Registers `fn(parser) -> run` as the subcommand `name`."""
  def register(fn):
    SUBCOMMANDS[name] = fn
    return fn
  return register


def load_config(spec: str | None):
  """get_config() of a config file such as configs/omni_7b.py or configs/magvit.py:tiny (None -> None)."""
  if spec is None:
    return None
  from omnidiff_jax.config import load_config_file
  try:
    return load_config_file(spec)
  except FileNotFoundError as e:
    raise SystemExit(f"--config: {e}")


def make_mesh(spec: str | None):
  """'data,fsdp,tensor' (one entry may be -1) -> jax Mesh over all devices; None -> None."""
  if not spec:
    return None
  import ml_collections
  from omnidiff_jax import sharding
  sizes = [int(x) for x in spec.split(",")]
  if len(sizes) != 3:
    raise SystemExit(f"--mesh {spec!r}: expected three sizes data,fsdp,tensor such as 1,-1,1")
  return sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, sizes))))


@subcommand("hf-to-orbax")
def hf_to_orbax(parser: argparse.ArgumentParser) -> Runner:
  """HF safetensors directory (Dream 152,064 or Omni 176,264 vocab) -> Orbax checkpoint, streamed."""
  parser.add_argument("hf_dir", help="directory with config.json and model.safetensors or sharded *.safetensors")
  parser.add_argument("out", help="output checkpoint root (load it with omnidiff_jax.checkpoints.load)")
  parser.add_argument("--config", help="config file (e.g. configs/omni_7b.py): vocab layout and model settings; "
                                       "default: from config.json")
  parser.add_argument("--dtype", help="store parameters in this dtype (bfloat16, float32); default: as stored")
  parser.add_argument("--mesh", help="data,fsdp,tensor: write a sharded layout over this mesh, e.g. 1,-1,1")

  def run(args):
    from omnidiff_jax.checkpoints import convert
    info = convert.hf_to_orbax(args.hf_dir, args.out, config=load_config(args.config), dtype=args.dtype,
                               mesh=make_mesh(args.mesh))
    print(f"wrote {args.out}: vocab {info['config']['vocab']['size']}, "
          f"{info['config']['model']['num_layers']} layers, dtype {info['config']['model']['param_dtype']}")
    if info["extra_keys"]:
      print(f"carried through {len(info['extra_keys'])} extra Omni tensors:")
      for key in info["extra_keys"]:
        print(f"  {key}")
  return run


@subcommand("orbax-to-hf")
def orbax_to_hf(parser: argparse.ArgumentParser) -> Runner:
  """Orbax checkpoint -> sharded HF safetensors + model.safetensors.index.json + config.json."""
  parser.add_argument("ckpt", help="checkpoint root (latest step) or step directory")
  parser.add_argument("out_dir", help="output HF directory (must not exist)")
  parser.add_argument("--max-shard-size", default="5GB", help="largest shard file, e.g. 5GB, 500MB")
  parser.add_argument("--dtype", help="cast tensors to this dtype; default: as stored (byte-identical round trip)")

  def run(args):
    from omnidiff_jax.checkpoints import convert
    keys = convert.orbax_to_hf(args.ckpt, args.out_dir, max_shard_size=args.max_shard_size, dtype=args.dtype)
    print(f"wrote {len(keys)} tensors to {args.out_dir}")
  return run


@subcommand("expand-vocab")
def expand_vocab(parser: argparse.ArgumentParser) -> Runner:
  """Grow embedding and lm_head to a larger vocab (Dream -> Omni); new rows ~ N(0, std), seeded."""
  parser.add_argument("src", help="source checkpoint root or step directory")
  parser.add_argument("out", help="output checkpoint root")
  parser.add_argument("--config", help="config file whose vocab section is the target; default: Omni 176,264")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--std", type=float, default=0.02)

  def run(args):
    from omnidiff_jax.checkpoints import convert
    cfg = load_config(args.config)
    convert.expand_vocab(args.src, args.out, vocab=None if cfg is None else cfg.vocab, seed=args.seed, std=args.std)
    print(f"wrote {args.out}")
  return run


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")


@subcommand("magvit")
def magvit(parser: argparse.ArgumentParser) -> Runner:
  """showlab/magvitv2 PyTorch checkpoint (file or directory) -> our MAGVIT-v2 safetensors file."""
  parser.add_argument("src", help="pytorch_model.bin / .safetensors file, or the checkpoint directory")
  parser.add_argument("dst", help="output .safetensors")
  parser.add_argument("--config", default=os.path.join(CONFIG_DIR, "magvit.py"), help="MAGVIT config file")

  def run(args):
    from omnidiff_jax.models.magvit import params as magvit_ckpt
    count = magvit_ckpt.convert_magvit(args.src, args.dst, load_config(args.config).model)
    print(f"converted {count} tensors: {args.src} -> {args.dst}")
  return run


@subcommand("speech-in")
def speech_in(parser: argparse.ArgumentParser) -> Runner:
  """SenseVoiceSmall model.pt / glm-4-voice-tokenizer / Omni projector weights -> our safetensors file."""
  parser.add_argument("--kind", required=True, choices=("sensevoice", "whisper_vq", "projector"))
  parser.add_argument("src", help="model.pt, a .safetensors file or a directory of shards")
  parser.add_argument("dst", help="output .safetensors")
  parser.add_argument("--config", help="speech config file (default: configs/whisper_vq.py for whisper_vq, "
                                       "else configs/sensevoice.py)")

  def run(args):
    from omnidiff_jax.models.speech_in import params as speech_in_ckpt
    default = "whisper_vq.py" if args.kind == "whisper_vq" else "sensevoice.py"
    cfg = load_config(args.config or os.path.join(CONFIG_DIR, default))
    speech_in_ckpt.convert_file(args.kind, args.src, args.dst, cfg)
    print(f"wrote {args.dst}")
  return run


@subcommand("speech-decoder")
def speech_decoder(parser: argparse.ArgumentParser) -> Runner:
  """GLM-4-Voice decoder flow.pt + hift.pt -> our {flow,hift}.safetensors (weight norm folded)."""
  parser.add_argument("flow_pt", help="flow.pt of THUDM/glm-4-voice-decoder")
  parser.add_argument("hift_pt", help="hift.pt of THUDM/glm-4-voice-decoder")
  parser.add_argument("out_dir", help="output directory (load with omnidiff_jax.models.speech_out.params.load_decoder)")
  parser.add_argument("--config", default=os.path.join(CONFIG_DIR, "speech_decoder.py"), help="decoder config")

  def run(args):
    from omnidiff_jax.models.speech_out import params as speech_decoder_ckpt
    speech_decoder_ckpt.convert(load_config(args.config), args.flow_pt, args.hift_pt, args.out_dir)
    print(f"wrote {args.out_dir}/flow.safetensors and hift.safetensors")
  return run


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--cpu-devices", type=int, default=0,
                      help="fake this many CPU devices (to write a sharded layout without accelerators)")
  sub = parser.add_subparsers(dest="command", required=True)
  runners = {}
  for name, build in SUBCOMMANDS.items():
    runners[name] = build(sub.add_parser(name, help=build.__doc__, description=build.__doc__, parents=[common]))
  args = parser.parse_args(argv)
  if args.cpu_devices:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(args.cpu_devices)
  from omnidiff_jax.checkpoints import CheckpointError
  try:
    runners[args.command](args)
  except (CheckpointError, ValueError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  sys.exit(main())
