"""User / assistant speech from the command line: wav files -> GLM-4-Voice codes or SenseVoice features.

  python tools/speech_tokenize.py {whisper_vq,sensevoice} --params=FILE [--flags] WAVS...

Subcommands:
  whisper_vq  wav files -> GLM-4-Voice code ids, written as `<stem>_glm4voice.json` (upstream's cache name)
  sensevoice  wav files -> SenseVoice encoder features (T_lfr + 4, 512), written as `<stem>_sensevoice.npy`

  python tools/speech_tokenize.py whisper_vq --params=whisper_vq.safetensors a.wav b.flac
  python tools/speech_tokenize.py sensevoice --params=sensevoice.safetensors --cmvn=SenseVoiceSmall/am.mvn a.wav
  python tools/speech_tokenize.py sensevoice --config=configs/sensevoice_tiny.py --params=sv.safetensors a.wav

--params is our parameter file (tools/convert_checkpoint.py speech-in --kind=whisper_vq|sensevoice). --config
defaults to configs/whisper_vq.py / configs/sensevoice.py. Unreadable or bad audio (empty, NaN/Inf, too long)
is reported and skipped (--on_error=skip, the default) or stops the run (--on_error=error). Stereo files:
whisper_vq keeps channel 0 and sensevoice averages the channels, as upstream does.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
DEFAULT_CONFIGS = {"whisper_vq": "whisper_vq.py", "sensevoice": "sensevoice.py"}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Speech config file[:arg]; default: the subcommand's.")
_PARAMS = flags.DEFINE_string("params", None, "Our parameter file (tools/convert_checkpoint.py speech-in).",
                              required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Where outputs go (default: next to each input).")
_ON_ERROR = flags.DEFINE_enum("on_error", "skip", ["skip", "error"], "Bad or unreadable audio: skip and report, "
                              "or stop.")
_CMVN = flags.DEFINE_string("cmvn", "", "sensevoice: am.mvn (overrides config frontend.cmvn_file).")
_SEED = flags.DEFINE_integer("seed", 0, "sensevoice: dither noise seed (when frontend.dither > 0).")


def _config(command: str):
  if _CONFIG.value is not None:
    return _CONFIG.value
  from omnidiff_jax.config import load_config_file
  return load_config_file(os.path.join(CONFIG_DIR, DEFAULT_CONFIGS[command]))


def read_wave(path: str, channel_policy: str):
  """-> (mono float32 waveform, sample rate). channel_policy: 'first' or 'mean' for multi-channel files."""
  import numpy as np
  from omnidiff_jax.data.media import read_audio
  wave, rate = read_audio(path)   # (N, C)
  return (wave[:, 0] if channel_policy == "first" else wave.mean(axis=1)).astype(np.float32), rate


def _for_each_file(paths, channel_policy: str, work, desc: str):
  """Reads each file and calls work(path, wave, rate); unreadable or bad audio is skipped or fatal."""
  from tqdm import tqdm
  from omnidiff_jax.data.errors import BadSample
  from omnidiff_jax.models.speech_in.frontend import BadAudioError
  done = skipped = 0
  for path in tqdm(paths, desc=desc, unit="file"):
    try:
      work(path, *read_wave(path, channel_policy))
      done += 1
    except (BadSample, BadAudioError, RuntimeError, OSError) as e:
      if _ON_ERROR.value == "error":
        raise SystemExit(f"{path}: {e}")
      print(f"skipping {path}: {e}", file=sys.stderr)
      skipped += 1
  print(f"{desc}: {done} file(s) done, {skipped} skipped")


def _out_path(wav: str, suffix: str) -> str:
  stem = os.path.splitext(os.path.basename(wav))[0]
  return os.path.join(_OUTPUT_DIR.value or os.path.dirname(os.path.abspath(wav)), stem + suffix)


def whisper_vq_codes(wavs: list[str]) -> None:
  from omnidiff_jax.media_tokenizers import SpeechTokenizer
  tokenizer = SpeechTokenizer.from_config(_config("whisper_vq"), _PARAMS.value)

  def work(path, wave, rate):
    codes = tokenizer.encode_speech([wave], rate)[0]
    with open(_out_path(path, "_glm4voice.json"), "w") as out:
      json.dump(codes.tolist(), out)

  _for_each_file(wavs, "first", work, "whisper_vq")


def sensevoice_features(wavs: list[str]) -> None:
  import numpy as np
  from omnidiff_jax.media_tokenizers import SpeechFeaturizer
  featurizer = SpeechFeaturizer.from_config(_config("sensevoice"), _PARAMS.value, _CMVN.value, _SEED.value)

  def work(path, wave, rate):
    np.save(_out_path(path, "_sensevoice.npy"), featurizer.speech_features([wave], rate)[0])

  _for_each_file(wavs, "mean", work, "sensevoice")


def main(argv):
  commands = {"whisper_vq": whisper_vq_codes, "sensevoice": sensevoice_features}
  if len(argv) < 3 or argv[1] not in commands:
    raise app.UsageError(f"usage: speech_tokenize.py {{{'|'.join(commands)}}} [flags] WAVS...")
  commands[argv[1]](argv[2:])


if __name__ == "__main__":
  app.run(main)
