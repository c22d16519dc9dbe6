"""Sample with a task preset: a prompt in, text ids / image codes / speech codes out (JSON), and optionally
the images as PNG (MAGVIT-v2) and the speech as WAV (GLM-4-Voice decoder).

The model is a converted or training checkpoint (--checkpoint: tools/convert_checkpoint.py output or a training
run's <workdir>/<stage>/checkpoints) or, without one, a random init of --config. The prompt is text formatted
with the upstream task template (--text, needs --tokenizer: the checkpoint's tokenizer.json) or raw token ids
(--prompt_ids; tasks with image or speech inputs).

  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task t2i \
      --text "a red bicycle leaning on a wall" --magvit magvit.safetensors --png_dir out/
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task tts \
      --text "Hello there." --speech_decoder decoder/ --wav_dir out/
  python tools/sample.py --task t2i --prompt_ids 12,40,7,99 --config.model.num_layers=2     # random tiny model
  python tools/sample.py --task t2i --prompt_ids 1,2,3 --threshold 0.9 --block_size 32 --kv_cache
"""
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config (vocab, model).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Converted or training Orbax checkpoint (its config replaces --config).")
_TEXT = flags.DEFINE_multi_string("text", None, "Task text (caption, TTS text, question); repeat for a batch.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer.json, or a directory holding it (for --text).")
_PNG_DIR = flags.DEFINE_string("png_dir", None, "Decode generated image codes to PNGs in this directory.")
_MAGVIT = flags.DEFINE_string("magvit", None, "MAGVIT-v2 weights for --png_dir (ours or torch); none: random.")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
_MAGVIT_CONFIG = flags.DEFINE_string("magvit_config", os.path.join(CONFIG_DIR, "magvit.py"),
                                     "MAGVIT-v2 config file[:arg].")
_WAV_DIR = flags.DEFINE_string("wav_dir", None, "Decode generated speech codes to WAVs in this directory.")
_SPEECH_DECODER = flags.DEFINE_string("speech_decoder", None, "Converted decoder dir for --wav_dir; none: random.")
_SPEECH_DECODER_CONFIG = flags.DEFINE_string("speech_decoder_config", os.path.join(CONFIG_DIR, "speech_decoder.py"),
                                             "Speech decoder config file.")
_TASK = flags.DEFINE_string("task", "t2i", "Task preset (omnidiff_jax.sampling.presets.PRESETS).")
_PROMPT_IDS = flags.DEFINE_string(
    "prompt_ids", None, "Prompt token ids: comma-separated, prompts separated by ';' (left padded into a batch).")
_UNCOND_IDS = flags.DEFINE_string("uncond_ids", None, "Unconditional prompt ids for CFG (tasks with cfg_scale).")
_TEXT_LEN = flags.DEFINE_integer("text_len", None, "Text tokens to speak (task tts_eval).")
_REGION = flags.DEFINE_integer("region_len", None, "Override the generation-region length.")
_STEPS = flags.DEFINE_integer("steps", None, "Override the number of denoising steps.")
_ALG = flags.DEFINE_string("alg", None, "Override the algorithm (origin, maskgit_plus, topk_margin, entropy, "
                           "entropy-penalty).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Override the temperature.")
_BLOCK = flags.DEFINE_integer("block_size", None, "Semi-autoregressive block size.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Confidence-threshold parallel decoding (e.g. 0.9).")
_KV_CACHE = flags.DEFINE_bool("kv_cache", False, "Approximate block KV cache (needs --block_size).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and model init seed without a checkpoint).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here (default: print).")


def _parse_ids(text: str, flag: str) -> list[list[int]]:
  try:
    prompts = [[int(tok) for tok in part.split(",") if tok.strip()] for part in text.split(";")]
  except ValueError as err:
    raise app.UsageError(f"--{flag} must be comma-separated integers, prompts separated by ';': {err}")
  if not prompts or any(not p for p in prompts):
    raise app.UsageError(f"--{flag} has an empty prompt: {text!r}")
  return prompts


def load_model(cfg, checkpoint: str | None, seed: int):
  """(model, config): the checkpoint and its stored config when given, else a random init of cfg.model."""
  if checkpoint is not None:
    from omnidiff_jax import checkpoints
    return checkpoints.load(checkpoint)
  from omnidiff_jax import sharding
  return sharding.create_model(cfg.model, seed=seed), cfg


# Sampling presets -> the upstream chat template they use.
CHAT_TASKS = {"t2i": "t2i", "tts": "tts", "tts_eval": "tts", "vqa": "vqa", "mme": "vqa", "asr": "asr",
              "asr_eval": "asr", "s2i": "s2i", "svqa": "svqa"}


def text_prompts(task: str, texts: list[str], tokenizer_path: str | None, vocab) -> tuple[list[list[int]], int]:
  """ChatML prompt ids (with the assistant header) of the task template for each text, and the text length
  in tokens of the first one (TTS eval length rule)."""
  from omnidiff_jax import chat
  from omnidiff_jax.vocab import load_tokenizer, verify_tokenizer
  if tokenizer_path is None:
    raise app.UsageError("--text needs --tokenizer (the checkpoint's tokenizer.json or its directory)")
  template = CHAT_TASKS[task]
  if "<|" in chat.TASKS[template][1]:  # the user turn holds an image or speech placeholder
    raise app.UsageError(f"task {task} takes an image or speech input: build its prompt ids (tools/tokenize_data.py)"
                         " and pass --prompt_ids")
  tokenizer = load_tokenizer(tokenizer_path)
  verify_tokenizer(vocab, tokenizer_path)
  prompts = [chat.build_chat(chat.task_messages(template, text), vocab, tokenizer, add_generation_prompt=True)
             .ids.tolist() for text in texts]
  return prompts, len(tokenizer.encode(texts[0], add_special_tokens=False).ids)


def write_media(task_rows: list[dict], seed: int) -> None:
  """PNGs of the image codes (--png_dir) and WAVs of the speech codes (--wav_dir), one file per row."""
  import numpy as np

  from omnidiff_jax.config import load_config_file
  if _PNG_DIR.value:
    from omnidiff_jax.checkpoints import magvit as magvit_ckpt
    from omnidiff_jax.models import image_processing
    rows = [i for i, r in enumerate(task_rows) if len(r.get("image", []))]
    mcfg = load_config_file(_MAGVIT_CONFIG.value).model
    if _MAGVIT.value is None:
      print("warning: no --magvit weights: decoding with a random MAGVIT-v2", file=sys.stderr)
    model = magvit_ckpt.load_magvit(mcfg, _MAGVIT.value) if _MAGVIT.value else magvit_ckpt.random_model(mcfg, seed)
    os.makedirs(_PNG_DIR.value, exist_ok=True)
    paths = [os.path.join(_PNG_DIR.value, f"sample_{i}.png") for i in rows]
    if rows:
      codes = np.stack([np.asarray(task_rows[i]["image"], np.int32) for i in rows])
      image_processing.decode_to_pngs(model, codes, paths, batch_size=len(rows), desc="MAGVIT-v2 decode")
    print(f"wrote {len(paths)} PNGs to {_PNG_DIR.value} ({len(task_rows) - len(rows)} rows had no image codes)",
          file=sys.stderr)
  if _WAV_DIR.value:
    from omnidiff_jax.models.speech_decoder.decode import SpeechDecoder, build_models, decode_to_wav
    rows = [i for i, r in enumerate(task_rows) if len(r.get("speech", []))]
    dcfg = load_config_file(_SPEECH_DECODER_CONFIG.value)
    if _SPEECH_DECODER.value:
      decoder = SpeechDecoder.from_checkpoint(dcfg, _SPEECH_DECODER.value)
    else:
      print("warning: no --speech_decoder weights: decoding with a random GLM-4-Voice decoder", file=sys.stderr)
      decoder = SpeechDecoder(dcfg, *build_models(dcfg, seed=seed))
    os.makedirs(_WAV_DIR.value, exist_ok=True)
    paths = [os.path.join(_WAV_DIR.value, f"sample_{i}.wav") for i in rows]
    if rows:
      decode_to_wav([np.asarray(task_rows[i]["speech"], np.int32) for i in rows], paths, decoder=decoder, seed=seed)
    print(f"wrote {len(paths)} WAVs to {_WAV_DIR.value} ({len(task_rows) - len(rows)} rows had no speech codes)",
          file=sys.stderr)


def main(argv):
  del argv
  import numpy as np

  from omnidiff_jax.sampling import PRESETS, generate_task, split_outputs
  from omnidiff_jax.vocab import VocabLayout

  if (_PROMPT_IDS.value is None) == (_TEXT.value is None):
    raise app.UsageError("give either --text (with --tokenizer) or --prompt_ids (comma-separated token ids; "
                         "';' between prompts)")
  if _TASK.value not in PRESETS:
    raise app.UsageError(f"unknown --task {_TASK.value!r}; choose one of {sorted(PRESETS)}")
  model, cfg = load_model(_CONFIG.value, _CHECKPOINT.value, _SEED.value)
  vocab = VocabLayout.from_config(cfg.vocab)
  text_len = _TEXT_LEN.value
  if _TEXT.value is not None:
    prompts, first_text_len = text_prompts(_TASK.value, _TEXT.value, _TOKENIZER.value, vocab)
    text_len = text_len if text_len is not None else first_text_len
  else:
    prompts = _parse_ids(_PROMPT_IDS.value, "prompt_ids")
  uncond = _parse_ids(_UNCOND_IDS.value, "uncond_ids") if _UNCOND_IDS.value else None
  for ids in prompts + (uncond or []):
    bad = [i for i in ids if not 0 <= i < vocab.size]
    if bad:
      raise app.UsageError(f"token ids {bad} are outside the vocabulary [0, {vocab.size}) of --config")
  overrides = {name: flag.value for name, flag in [
      ("region_len", _REGION), ("steps", _STEPS), ("alg", _ALG), ("temperature", _TEMPERATURE),
      ("block_size", _BLOCK), ("threshold", _THRESHOLD)] if flag.value is not None}
  if _KV_CACHE.value:
    overrides["kv_cache"] = True
  try:
    start = time.perf_counter()
    result, sampler_cfg = generate_task(model, vocab, _TASK.value, prompt_ids=prompts, text_len=text_len,
                                        uncond_ids=uncond, seed=_SEED.value, **overrides)
    tokens = np.asarray(result.tokens)
    seconds = time.perf_counter() - start
  except ValueError as err:
    raise app.UsageError(str(err))
  print(f"task {_TASK.value}: {tokens.shape[0]} x {tokens.shape[1]} tokens in {seconds:.2f} s (incl. compile), "
        f"{int(result.steps)} steps, {int(result.full_forwards)} full + {int(result.cached_forwards)} cached "
        f"forwards; {sampler_cfg}", file=sys.stderr)
  modalities = PRESETS[_TASK.value].output.split("+")
  rows = [{"tokens": row.tolist(), **{k: v.tolist() for k, v in split_outputs(row, vocab).items() if k in modalities}}
          for row in tokens]
  write_media(rows, _SEED.value)
  text = json.dumps({"task": _TASK.value, "results": rows})
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
    print(f"wrote {_OUT.value}", file=sys.stderr)
  else:
    print(text)


if __name__ == "__main__":
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  app.run(main)
