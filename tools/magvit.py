"""MAGVIT-v2 image tokenizer CLI: PNG/JPEG -> codes, codes -> PNG.

  python tools/magvit.py {encode,decode} [--flags] FILES...

  # images -> codes: shorter side bicubic-resized to --config.image.resolution, center-cropped, [-1, 1];
  # .npy holds int32 (N, L); .json holds [{"image": path, "codes": [...]}, ...]
  python tools/magvit.py encode --checkpoint magvit.safetensors --output codes.json a.png b.jpg
  python tools/magvit.py encode --checkpoint magvit.safetensors --config.image.resolution=512 --output u.npy x.png
  # codes -> PNGs: 00000_a.png, 00001_b.png, ... after the source images of a .json, else 00000.png, ...
  python tools/magvit.py decode --checkpoint magvit.safetensors --output_dir out/ codes.json
  # tiny random model, no checkpoint (tests, demos)
  python tools/magvit.py encode --config configs/magvit.py:tiny --output codes.npy a.png

--checkpoint accepts our converted file (tools/convert_checkpoint.py magvit) or a torch checkpoint (converted
on the fly). Without it the model
has random weights (a warning says so). Image codes here are tokenizer codes in [0, 8192); the LLM's image
token ids are these plus the vocabulary's image offset (omnidiff_jax.vocab.VocabLayout.image_id).
"""
import os

from absl import app, flags
from ml_collections import config_flags

COMMANDS = ("encode", "decode")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "magvit.py"), "MAGVIT-v2 config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "Weights: our converted .safetensors or a torch checkpoint.")
_OUTPUT = flags.DEFINE_string("output", "codes.npy", "encode: output codes file (.npy or .json).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "decoded", "decode: folder for the PNGs.")
_GRID = flags.DEFINE_string("grid", "", "decode: code grid 'h,w' (default: square).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Images per jitted call (0: config.run.batch_size).")


def load_model(cfg, checkpoint: str):
  """Our converted file or a torch checkpoint; '' gives random weights (with a warning)."""
  from omnidiff_jax.media_tokenizers import ImageTokenizer
  return ImageTokenizer.from_config(cfg, checkpoint or None, cfg.run.seed).model


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: tools/magvit.py {{{'|'.join(COMMANDS)}}} [flags] [files]; see --help")
  from omnidiff_jax.models.magvit import preprocess as image_processing

  command, args = argv[1], argv[2:]
  cfg = _CONFIG.value
  batch_size = _BATCH.value or cfg.run.batch_size
  if command == "encode":
    if not args or not _OUTPUT.value.endswith((".npy", ".json")):
      raise app.UsageError("encode needs image files and an --output ending in .npy or .json")
    codes = image_processing.encode_files(load_model(cfg, _CHECKPOINT.value), args, cfg.image.resolution,
                                          batch_size, desc="encode")
    image_processing.write_codes(_OUTPUT.value, codes, args)
    print(f"{len(args)} images -> {codes.shape[1]} codes each -> {_OUTPUT.value}")
  else:
    if len(args) != 1:
      raise app.UsageError("decode needs exactly one codes file (.npy or .json)")
    codes, names = image_processing.read_codes(args[0], cfg.model.z_channels)  # fails before the model loads
    grid = tuple(int(x) for x in _GRID.value.split(",")) if _GRID.value else None
    paths = [os.path.join(_OUTPUT_DIR.value, name) for name in names]
    image_processing.decode_to_pngs(load_model(cfg, _CHECKPOINT.value), codes, paths, batch_size, grid,
                                    desc="decode")
    print(f"{len(paths)} images -> {_OUTPUT_DIR.value}/")


if __name__ == "__main__":
  app.run(main)
