"""MAGVIT-v2 image tokenizer CLI: PNG/JPEG -> codes, codes -> PNG, and torch checkpoint conversion.

  # showlab/magvitv2 torch weights (file or HF snapshot directory) -> our safetensors file
  python tools/magvit.py convert --src ~/magvitv2 --dst magvit.safetensors
  # images -> codes: shorter side bicubic-resized to --config.image.resolution, center-cropped, [-1, 1];
  # .npy holds int32 (N, L); .json holds [{"image": path, "codes": [...]}, ...]
  python tools/magvit.py encode --checkpoint magvit.safetensors --output codes.json a.png b.jpg
  python tools/magvit.py encode --checkpoint magvit.safetensors --config.image.resolution=512 --output u.npy x.png
  # codes -> PNGs: 00000_a.png, 00001_b.png, ... after the source images of a .json, else 00000.png, ...
  python tools/magvit.py decode --checkpoint magvit.safetensors --output_dir out/ codes.json
  # tiny random model, no checkpoint (tests, demos)
  python tools/magvit.py encode --config configs/magvit.py:tiny --output codes.npy a.png

--checkpoint accepts our converted file or a torch checkpoint (converted on the fly). Without it the model
has random weights (a warning says so). Image codes here are tokenizer codes in [0, 8192); the LLM's image
token ids are these plus the vocabulary's image offset (omnidiff_jax.vocab.VocabLayout.image_id).
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

COMMANDS = ("encode", "decode", "convert")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "magvit.py"), "MAGVIT-v2 config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "Weights: our converted .safetensors or a torch checkpoint.")
_OUTPUT = flags.DEFINE_string("output", "codes.npy", "encode: output codes file (.npy or .json).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "decoded", "decode: folder for the PNGs.")
_GRID = flags.DEFINE_string("grid", "", "decode: code grid 'h,w' (default: square).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Images per jitted call (0: config.run.batch_size).")
_SRC = flags.DEFINE_string("src", "", "convert: torch checkpoint file or directory (showlab/magvitv2).")
_DST = flags.DEFINE_string("dst", "", "convert: output .safetensors file.")


def load_model(cfg, checkpoint: str):
  """Our converted file or a torch checkpoint; '' gives random weights (with a warning)."""
  from omnidiff_jax.checkpoints import magvit as magvit_ckpt

  if checkpoint:
    return magvit_ckpt.load_magvit(cfg.model, checkpoint)
  logging.warning("no --checkpoint: MAGVIT-v2 with RANDOM weights (seed %d)", cfg.run.seed)
  return magvit_ckpt.random_model(cfg.model, cfg.run.seed)


def read_codes(path: str, bits: int):
  """codes file (.npy int (N, L), or .json from `encode`) -> (codes int32 (N, L), PNG names); every code
  must lie in [0, 2**bits)."""
  import numpy as np

  if path.endswith(".json"):
    with open(path) as f:
      entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "codes" in e for e in entries):
      raise ValueError(f"{path}: expected a list of {{'image': ..., 'codes': [...]}} objects")
    codes = np.asarray([e["codes"] for e in entries])
    names = [f"{i:05d}_" + os.path.splitext(os.path.basename(e.get("image", "")))[0] + ".png"
             for i, e in enumerate(entries)]
  elif path.endswith(".npy"):
    codes = np.load(path)
    names = [f"{i:05d}.png" for i in range(len(codes))]
  else:
    raise ValueError(f"{path}: codes file must be .npy or .json")
  if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{path}: expected integer codes of shape (N, L), got {codes.dtype} {codes.shape}")
  if codes.min() < 0 or codes.max() >= 2 ** bits:
    raise ValueError(f"{path}: codes must lie in [0, {2 ** bits}); got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32), names


def encode(model, paths, resolution: int, output: str, batch_size: int) -> None:
  """Image files -> codes file (.npy int32 (N, L) or .json)."""
  import numpy as np

  from omnidiff_jax.models import image_processing, magvit

  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
  images = image_processing.load_batch(paths, resolution)
  codes = magvit.encode_batched(model, images, batch_size, desc="encode")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  if output.endswith(".json"):
    with open(output, "w") as f:
      json.dump([{"image": p, "codes": c.tolist()} for p, c in zip(paths, codes)], f)
  elif output.endswith(".npy"):
    np.save(output, codes)
  else:
    raise ValueError(f"--output {output}: must end in .npy or .json")
  print(f"{len(paths)} images -> {codes.shape[1]} codes each -> {output}")


def decode(model, codes, names, output_dir: str, batch_size: int, grid=None) -> None:
  """codes (N, L) -> one PNG per row in output_dir, named by `names`."""
  from omnidiff_jax.models import image_processing, magvit

  images = magvit.decode_batched(model, codes, batch_size, grid, desc="decode")
  for name, image in zip(names, image_processing.to_uint8(images)):
    image_processing.save_png(image, os.path.join(output_dir, name))
  print(f"{len(names)} images ({images.shape[1]}x{images.shape[2]}) -> {output_dir}/")


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: tools/magvit.py {{{'|'.join(COMMANDS)}}} [flags] [files]; see --help")
  command, args = argv[1], argv[2:]
  cfg = _CONFIG.value
  batch_size = _BATCH.value or cfg.run.batch_size
  if command == "convert":
    from omnidiff_jax.checkpoints import magvit as magvit_ckpt
    if not _SRC.value or not _DST.value or args:
      raise app.UsageError("convert needs --src and --dst and no positional arguments")
    count = magvit_ckpt.convert_magvit(_SRC.value, _DST.value, cfg.model)
    print(f"converted {count} tensors: {_SRC.value} -> {_DST.value}")
  elif command == "encode":
    if not args:
      raise app.UsageError("encode needs image files")
    encode(load_model(cfg, _CHECKPOINT.value), args, cfg.image.resolution, _OUTPUT.value, batch_size)
  else:
    if len(args) != 1:
      raise app.UsageError("decode needs exactly one codes file (.npy or .json)")
    codes, names = read_codes(args[0], cfg.model.z_channels)  # a bad file fails before the model loads
    grid = tuple(int(x) for x in _GRID.value.split(",")) if _GRID.value else None
    decode(load_model(cfg, _CHECKPOINT.value), codes, names, _OUTPUT_DIR.value, batch_size, grid)


if __name__ == "__main__":
  app.run(main)
