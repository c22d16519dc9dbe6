"""GLM-4-Voice speech codes -> 22,050 Hz WAV files.

  # codes: .npy (1-D codes, or 2-D rows) / .json (a list of codes, or a list of lists)
  python tools/speech_decode.py --codes=answer.npy --ckpt=ckpt/speech_decoder --out=answer.wav
  python tools/speech_decode.py --codes=a.json,b.npy --ckpt=ckpt/speech_decoder --out=wavs/
  # no checkpoint: random tiny decoder (smoke test)
  python tools/speech_decode.py --config=configs/speech_decoder_tiny.py --codes=c.json --out=c.wav

--ckpt is the converted release (THUDM/glm-4-voice-decoder flow.pt + hift.pt -> tools/convert_checkpoint.py
speech-decoder).
Codes are 0-based speech codes; pass --id_offset (the vocabulary's audio offset, 151688 for Omni) to decode LLM
vocabulary ids. One sequence with --out *.wav writes that file; otherwise --out is a directory of
<input stem>[_<row>].wav files. Upstream Omni decodes with 10 Euler steps (--steps).
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "speech_decoder.py"), "Decoder config.")
_CKPT = flags.DEFINE_string("ckpt", None, "Converted checkpoint dir ({flow,hift}.safetensors); unset = random init.")
_CODES = flags.DEFINE_list("codes", None, ".npy / .json files of speech codes.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output .wav (one sequence) or directory.", required=True)
_ID_OFFSET = flags.DEFINE_integer("id_offset", 0, "Subtracted from every code (LLM ids -> codes).")
_STEPS = flags.DEFINE_integer("steps", None, "Euler steps (default config.decode.n_timesteps = 10).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Sequences per jitted batch.")
_SEED = flags.DEFINE_integer("seed", None, "Noise seed (default config.decode.seed).")


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; the inputs go in --codes")
  from tqdm import tqdm
  from omnidiff_jax.models.speech_out import SpeechDecoder, build_models, decode_to_wav
  from omnidiff_jax.models.speech_out import params as speech_out_params
  cfg = _CONFIG.value
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


if __name__ == "__main__":
  app.run(main)
