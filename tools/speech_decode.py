"""GLM-4-Voice speech codes -> 22,050 Hz WAV files, and flow.pt/hift.pt conversion.

  # once: convert the released decoder (THUDM/glm-4-voice-decoder: flow.pt, hift.pt)
  python tools/speech_decode.py convert --flow_pt glm-4-voice-decoder/flow.pt \
      --hift_pt glm-4-voice-decoder/hift.pt --ckpt ckpt/speech_decoder
  # decode: .npy (1-D codes, or 2-D rows) / .json (a list of codes, or a list of lists)
  python tools/speech_decode.py decode --codes answer.npy --ckpt ckpt/speech_decoder --out answer.wav
  python tools/speech_decode.py decode --codes a.json,b.npy --ckpt ckpt/speech_decoder --out wavs/
  # no checkpoint: random tiny decoder (smoke test)
  python tools/speech_decode.py decode --config configs/speech_decoder_tiny.py --codes c.json --out c.wav

Codes are 0-based speech codes; pass --id_offset (the vocabulary's audio offset, 151688 for Omni) to decode LLM
vocabulary ids. One sequence with --out *.wav writes that file; otherwise --out is a directory of
<input stem>[_<row>].wav files. Upstream Omni decodes with 10 Euler steps (--steps).
"""
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "speech_decoder.py"), "Decoder config.")
_CKPT = flags.DEFINE_string("ckpt", None, "Converted checkpoint dir ({flow,hift}.safetensors); unset = random init.")
_CODES = flags.DEFINE_list("codes", [], "decode: .npy / .json files of speech codes.")
_OUT = flags.DEFINE_string("out", None, "decode: output .wav (one sequence) or directory.")
_ID_OFFSET = flags.DEFINE_integer("id_offset", 0, "decode: subtracted from every code (LLM ids -> codes).")
_STEPS = flags.DEFINE_integer("steps", None, "decode: Euler steps (default config.decode.n_timesteps = 10).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "decode: sequences per jitted batch.")
_SEED = flags.DEFINE_integer("seed", None, "decode: noise seed (default config.decode.seed).")
_FLOW_PT = flags.DEFINE_string("flow_pt", None, "convert: torch flow.pt.")
_HIFT_PT = flags.DEFINE_string("hift_pt", None, "convert: torch hift.pt.")


def read_codes(path: str, id_offset: int):
  """-> list of (name, int32 codes) from a .npy (1-D or 2-D) or .json (list or list of lists) file."""
  import numpy as np
  stem = os.path.splitext(os.path.basename(path))[0]
  if path.endswith(".npy"):
    data = np.load(path)
  elif path.endswith(".json"):
    with open(path) as f:
      data = json.load(f)
  else:
    raise ValueError(f"{path}: expected a .npy or .json file of speech codes")
  rows = [data] if np.ndim(data[0] if len(data) else data) == 0 else list(data)
  out = []
  for i, row in enumerate(rows):
    row = np.asarray(row)
    if row.ndim != 1 or not np.issubdtype(row.dtype, np.integer):
      raise ValueError(f"{path}: row {i} must be a 1-D list of integer codes, got shape {row.shape} {row.dtype}")
    out.append((stem if len(rows) == 1 else f"{stem}_{i}", (row - id_offset).astype(np.int32)))
  return out


def decode(cfg):
  from tqdm import tqdm
  from omnidiff_jax.models.speech_out import SpeechDecoder, build_models, decode_to_wav
  from omnidiff_jax.models.speech_out import params as speech_out_params
  if not _CODES.value or not _OUT.value:
    raise app.UsageError("decode needs --codes and --out")
  items = [item for path in _CODES.value for item in read_codes(path, _ID_OFFSET.value)]
  if len(items) == 1 and _OUT.value.endswith(".wav"):
    paths = [_OUT.value]
  else:
    os.makedirs(_OUT.value, exist_ok=True)
    paths = [os.path.join(_OUT.value, f"{name}.wav") for name, _ in items]
  if _CKPT.value:
    decoder = speech_out_params.load_decoder(cfg, _CKPT.value)
  else:
    print("no --ckpt: random-init decoder (noise-like audio)")
    decoder = SpeechDecoder(cfg, *build_models(cfg))
  for start in tqdm(range(0, len(items), _BATCH.value), desc="decoding", unit="batch"):
    chunk = slice(start, start + _BATCH.value)
    wavs = decode_to_wav([c for _, c in items[chunk]], paths[chunk], decoder=decoder, seed=_SEED.value,
                         n_timesteps=_STEPS.value)
    for p, w in zip(paths[chunk], wavs):
      tqdm.write(f"{p}: {len(w) / 22050:.2f} s")


def convert(cfg):
  from omnidiff_jax.models.speech_out.params import convert as convert_ckpt
  if not (_FLOW_PT.value and _HIFT_PT.value and _CKPT.value):
    raise app.UsageError("convert needs --flow_pt, --hift_pt and --ckpt (output dir)")
  convert_ckpt(cfg, _FLOW_PT.value, _HIFT_PT.value, _CKPT.value)
  print(f"wrote {_CKPT.value}/flow.safetensors and hift.safetensors")


def main(argv):
  commands = {"decode": decode, "convert": convert}
  if len(argv) != 2 or argv[1] not in commands:
    raise app.UsageError(f"usage: speech_decode.py {{{'|'.join(commands)}}} [flags]; see --helpfull")
  commands[argv[1]](_CONFIG.value)


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  app.run(main)
