"""Speech in / speech tokens from the command line (thin wrapper over omnidiff_jax.models + checkpoints).

Subcommands:
  whisper_vq  wav files -> GLM-4-Voice code ids, written as `<stem>_glm4voice.json` (upstream's cache name)
  sensevoice  wav files -> SenseVoice encoder features (T_lfr + 4, 512), written as `<stem>_sensevoice.npy`
  convert     PyTorch weights -> our parameter file (safetensors with '/'-joined parameter paths)

  python tools/speech_tokenize.py convert --kind whisper_vq --config configs/whisper_vq.py \
      --input glm-4-voice-tokenizer/ --output whisper_vq.safetensors
  python tools/speech_tokenize.py convert --kind sensevoice --config configs/sensevoice.py \
      --input SenseVoiceSmall/model.pt --output sensevoice.safetensors
  python tools/speech_tokenize.py whisper_vq --params whisper_vq.safetensors a.wav b.flac
  python tools/speech_tokenize.py sensevoice --params sensevoice.safetensors --cmvn SenseVoiceSmall/am.mvn a.wav

Unreadable or bad audio (empty, NaN/Inf, too long) is reported and skipped (--on_error=skip, the default) or
stops the run (--on_error=raise). Stereo files: whisper_vq keeps channel 0 and sensevoice averages the
channels, as upstream does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
KINDS = {"sensevoice": "sensevoice.py", "whisper_vq": "whisper_vq.py", "projector": "sensevoice.py"}


def load_config(path: str):
  from omnidiff_jax.config import load_config_file
  try:
    return load_config_file(path)
  except FileNotFoundError as e:
    raise SystemExit(str(e))


def read_wave(path: str, channel_policy: str):
  """-> (mono float32 waveform, sample rate). channel_policy: 'first' or 'mean' for multi-channel files."""
  import numpy as np
  from omnidiff_jax.data.media import read_audio
  wave, rate = read_audio(path)   # (N, C)
  return (wave[:, 0] if channel_policy == "first" else wave.mean(axis=1)).astype(np.float32), rate


def _model(kind: str, cfg, params: str):
  from omnidiff_jax.models.speech_in import params as speech_in
  model = speech_in.model_for(kind, cfg)
  if params:
    speech_in.load_params(model, params)
  return model


def _for_each_file(paths, channel_policy: str, on_error: str, work, desc: str):
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
      if on_error == "raise":
        raise SystemExit(f"{path}: {e}")
      print(f"skipping {path}: {e}", file=sys.stderr)
      skipped += 1
  print(f"{desc}: {done} file(s) done, {skipped} skipped")


def _out_path(wav: str, output_dir: str, suffix: str) -> str:
  stem = os.path.splitext(os.path.basename(wav))[0]
  return os.path.join(output_dir or os.path.dirname(os.path.abspath(wav)), stem + suffix)


def cmd_whisper_vq(args):
  from omnidiff_jax.models.speech_in import frontend as audio_frontend, whisper_vq
  cfg = load_config(args.config)
  f = cfg.frontend
  frontend = audio_frontend.WhisperFrontend(n_mels=f.n_mels, n_fft=f.n_fft, hop_length=f.hop_length,
                                            sample_rate=f.sample_rate, pad_to_multiple_of=f.pad_to_multiple_of)
  model = _model("whisper_vq", cfg, args.params)

  def work(path, wave, rate):
    codes = whisper_vq.tokenize(model, frontend, [wave], rate, segment_seconds=f.segment_seconds,
                                batch_size=f.batch_size, max_seconds=f.max_seconds or None)[0]
    with open(_out_path(path, args.output_dir, "_glm4voice.json"), "w") as out:
      json.dump(codes, out)

  _for_each_file(args.wavs, "first", args.on_error, work, "whisper_vq")


def cmd_sensevoice(args):
  import numpy as np
  from omnidiff_jax.models.speech_in import frontend as audio_frontend, sensevoice
  cfg = load_config(args.config)
  f = cfg.frontend
  frontend = audio_frontend.SenseVoiceFrontend.from_config(f, args.cmvn)
  encoder = _model("sensevoice", cfg, args.params)
  rng = np.random.default_rng(args.seed) if f.dither else None

  def work(path, wave, rate):
    feats = sensevoice.encode_features(encoder, [frontend(wave, rate, rng)])[0]
    np.save(_out_path(path, args.output_dir, "_sensevoice.npy"), feats)

  _for_each_file(args.wavs, "mean", args.on_error, work, "sensevoice")


def cmd_convert(args):
  from omnidiff_jax.models.speech_in import params as speech_in
  cfg = load_config(args.config or os.path.join(CONFIG_DIR, KINDS[args.kind]))
  try:
    speech_in.convert_file(args.kind, args.input, args.output, cfg)
  except speech_in.CheckpointMismatchError as e:
    raise SystemExit(str(e))
  print(f"wrote {args.output}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name, default_cfg, helptext in (("whisper_vq", "whisper_vq.py", "wav -> GLM-4-Voice code ids (json)"),
                                      ("sensevoice", "sensevoice.py", "wav -> SenseVoice features (npy)")):
    p = sub.add_parser(name, help=helptext)
    p.add_argument("wavs", nargs="+", help="audio files soundfile can read (wav, flac, ogg, ...)")
    p.add_argument("--config", default=os.path.join(CONFIG_DIR, default_cfg), help="config file (get_config())")
    p.add_argument("--params", required=True, help="our parameter file, from the `convert` subcommand")
    p.add_argument("--output_dir", default="", help="where outputs go (default: next to each input)")
    p.add_argument("--on_error", choices=("skip", "raise"), default="skip", help="bad/unreadable audio policy")
    if name == "sensevoice":
      p.add_argument("--cmvn", default="", help="am.mvn (overrides config frontend.cmvn_file)")
      p.add_argument("--seed", type=int, default=0, help="dither noise seed (when frontend.dither > 0)")
  p = sub.add_parser("convert", help="PyTorch weights -> our parameter file")
  p.add_argument("--kind", choices=sorted(KINDS), required=True)
  p.add_argument("--input", required=True, help="model.pt / a .safetensors file / a directory of shards")
  p.add_argument("--output", required=True, help="output .safetensors")
  p.add_argument("--config", default="", help="config file (default: configs/<kind's model>.py)")
  args = parser.parse_args(argv)
  {"whisper_vq": cmd_whisper_vq, "sensevoice": cmd_sensevoice, "convert": cmd_convert}[args.command](args)


if __name__ == "__main__":
  main()
