"""Sample with a task preset: texts / images / speech in, text ids / image codes / speech codes out (JSON), and
optionally the images as PNG (MAGVIT-v2) and the speech as WAV (GLM-4-Voice decoder).

The model is a converted or training checkpoint (--checkpoint: tools/convert_checkpoint.py output or a training
run's <workdir>/<stage>/checkpoints) or, without one, a random init of --config. Inputs, one of each per batch
row (rows of different lengths are left padded):
  t2i, tts, tts_eval: --text          vqa, mme: --text (question) --image          svqa: --wav --image
  asr, asr_eval, s2i: --wav
formatted as upstream's inference does (omnidiff_jax.sampling.inputs) with the checkpoint's --tokenizer.
Images (512 px -> 1024 codes, --image_resolution) go through MAGVIT-v2 (--magvit); speech through the
WavFrontend (--cmvn: SenseVoiceSmall's am.mvn), the SenseVoice encoder and the projector, taken from the
checkpoint (its SenseVoice tensors, the model's projector) or from --sensevoice / --projector files
(tools/convert_checkpoint.py speech-in). s2i runs CFG with upstream's unconditional prompt. Raw --prompt_ids
(and --uncond_ids) bypass all this.

  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task t2i \
      --text "a red bicycle leaning on a wall" --magvit magvit.safetensors --png_dir out/
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task tts \
      --text "Hello there." --speech_decoder decoder/ --wav_dir out/
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task vqa \
      --text "Is the glass half empty or half full?" --image vqa_0.png --magvit magvit.safetensors
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task asr \
      --wav asr_0.wav --wav asr_1.wav --cmvn SenseVoiceSmall/am.mvn
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task s2i \
      --wav s2i_0.wav --cmvn SenseVoiceSmall/am.mvn --magvit magvit.safetensors --png_dir out/
  python tools/sample.py --checkpoint /ckpt/omni_orbax --tokenizer /ckpt/Omni-Diffusion --task svqa \
      --wav svqa_0.wav --image svqa_0.jpg --cmvn SenseVoiceSmall/am.mvn --magvit magvit.safetensors \
      --speech_decoder decoder/ --wav_dir out/
  python tools/sample.py --task t2i --prompt_ids 12,40,7,99 --config.model.num_layers=2     # random tiny model
  python tools/sample.py --task t2i --prompt_ids 1,2,3 --threshold 0.9 --block_size 32 --kv_cache
  python tools/sample.py --checkpoint /ckpt/omni_orbax ... --mesh 1,1,8      # 8-way tensor parallel
  python tools/sample.py --checkpoint run/stage1/checkpoints ...    # training's f32 weights load as bf16
  python tools/sample.py --task s2i --prompt_ids 5,6,7 --uncond_ids 5 --mode upstream --cfg_alignment upstream \
      --cfg_scale 2.0 --repetition_penalty 1.5 --position_penalty 2.0 --steps 64
Fidelity and speed: --mode, --cfg_alignment, --cfg_scale, --repetition_penalty, --position_penalty, --alg,
--temperature, --steps, --region_len (fidelity); --threshold, --block_size, --kv_cache (speed). Unset flags
keep the task preset's values.
Without weights the MAGVIT-v2 / speech networks are random (with a warning); tests/test_sample_cli.py runs
every input kind on tiny random models.
"""
import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
SENSEVOICE_PREFIX = "model.audio_model."  # a converted Omni checkpoint's SenseVoice tensors (HF names)
_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(CONFIG_DIR, "tiny.py"), "Model config (vocab, model).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Converted or training Orbax checkpoint (its config replaces --config).")
_TASK = flags.DEFINE_string("task", "t2i", "Task preset (omnidiff_jax.sampling.presets.PRESETS); inputs above.")
_TEXT = flags.DEFINE_multi_string("text", None, "Task text (caption, TTS text, question); repeat for a batch.")
_IMAGE = flags.DEFINE_multi_string("image", None, "Image file (vqa, mme, svqa); repeat for a batch.")
_WAV = flags.DEFINE_multi_string("wav", None, "User speech file (asr, asr_eval, s2i, svqa); repeat for a batch.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer.json, or a directory holding it (for the inputs).")
_IMAGE_RES = flags.DEFINE_integer("image_resolution", None, "Side of input images for MAGVIT-v2 (default: 512).")
_MAGVIT = flags.DEFINE_string("magvit", None, "MAGVIT-v2 weights (ours / torch) for --image, --png_dir; none: random.")
_MAGVIT_CONFIG = flags.DEFINE_string("magvit_config", os.path.join(CONFIG_DIR, "magvit.py"),
                                     "MAGVIT-v2 config file[:arg].")
_SENSEVOICE = flags.DEFINE_string("sensevoice", None, "SenseVoice encoder params (tools/convert_checkpoint.py "
                                  "speech-in); default: the checkpoint's, or random without --checkpoint.")
_PROJECTOR = flags.DEFINE_string("projector", None, "Speech projector params (convert_checkpoint.py speech-in --kind="
                                 "projector); default: the model's, else random.")
_SENSEVOICE_CONFIG = flags.DEFINE_string("sensevoice_config", None, "Speech-input config; default configs/"
                                         "sensevoice.py with --checkpoint, configs/sensevoice_tiny.py without.")
_CMVN = flags.DEFINE_string("cmvn", "", "SenseVoiceSmall's am.mvn for the speech features (overrides the config).")
_PNG_DIR = flags.DEFINE_string("png_dir", None, "Decode generated image codes to PNGs in this directory.")
_WAV_DIR = flags.DEFINE_string("wav_dir", None, "Decode generated speech codes to WAVs in this directory.")
_SPEECH_DECODER = flags.DEFINE_string("speech_decoder", None, "Converted decoder dir for --wav_dir; none: random.")
_SPEECH_DECODER_CONFIG = flags.DEFINE_string("speech_decoder_config", os.path.join(CONFIG_DIR, "speech_decoder.py"),
                                             "Speech decoder config file.")
_PROMPT_IDS = flags.DEFINE_string(
    "prompt_ids", None, "Prompt token ids: comma-separated, prompts separated by ';' (left padded into a batch).")
_UNCOND_IDS = flags.DEFINE_string("uncond_ids", None, "Unconditional prompt ids for CFG (with --prompt_ids).")
_TEXT_LEN = flags.DEFINE_integer("text_len", None, "Text tokens to speak (task tts_eval).")
_REGION = flags.DEFINE_integer("region_len", None, "Override the generation-region length.")
_STEPS = flags.DEFINE_integer("steps", None, "Override the number of denoising steps.")
_ALG = flags.DEFINE_string("alg", None, "Override the algorithm (origin, maskgit_plus, topk_margin, entropy, "
                           "entropy-penalty).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Override the temperature.")
_BLOCK = flags.DEFINE_integer("block_size", None, "Semi-autoregressive block size.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Confidence-threshold parallel decoding (e.g. 0.9).")
_KV_CACHE = flags.DEFINE_bool("kv_cache", None, "Approximate block KV cache (needs --block_size).")
_MODE = flags.DEFINE_enum("mode", None, ["default", "upstream"], "Sampler semantics: 'upstream' = token-identical "
                          "to upstream at batch 1 (sampling.schedule.SamplerConfig.mode).")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", None, "Classifier-free guidance weight (0 = off; s2i's preset: 2.0).")
_CFG_ALIGNMENT = flags.DEFINE_enum("cfg_alignment", None, ["region", "upstream"], "Where the unconditional row's "
                                   "region sits: at the conditional one's indices, or upstream's layout.")
_REPETITION_PENALTY = flags.DEFINE_float("repetition_penalty", None, "Penalty on ids already decoded (alg "
                                         "entropy-penalty; 1 = off).")
_POSITION_PENALTY = flags.DEFINE_float("position_penalty", None, "Position-penalty ramp P (1 = off).")
_MESH = flags.DEFINE_string("mesh", None, "Device mesh data,fsdp,tensor (one size may be -1) to shard the model over; "
                            "default: tensor parallel over the devices (sharding.inference_mesh_shape).")
_PARAM_DTYPE = flags.DEFINE_enum("param_dtype", None, ["bfloat16", "float16", "float32"],
                                 "Dtype to load --checkpoint's parameters in; default: its model.dtype (compute "
                                 "dtype), so a training checkpoint's f32 weights load as bf16 for the 7B.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and model / random tokenizer-network init seed).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here (default: print).")


def _parse_ids(text: str, flag: str) -> list[list[int]]:
  try:
    prompts = [[int(tok) for tok in part.split(",") if tok.strip()] for part in text.split(";")]
  except ValueError as err:
    raise app.UsageError(f"--{flag} must be comma-separated integers, prompts separated by ';': {err}")
  if not prompts or any(not p for p in prompts):
    raise app.UsageError(f"--{flag} has an empty prompt: {text!r}")
  return prompts


def make_mesh(spec: str | None, model_cfg):
  """The --mesh 'data,fsdp,tensor' (over its first devices when no size is -1, else all), or the
  tensor-parallel default for this model over all devices."""
  import math

  import jax
  import ml_collections

  from omnidiff_jax import sharding
  if spec:
    try:
      sizes = [int(x) for x in spec.split(",")]
    except ValueError:
      sizes = []
    if len(sizes) != 3:
      raise app.UsageError(f"--mesh {spec!r}: expected three sizes data,fsdp,tensor such as 1,1,-1")
  else:
    sizes = sharding.inference_mesh_shape(model_cfg, jax.device_count())
  devices = jax.devices() if -1 in sizes else jax.devices()[:math.prod(sizes)]
  return sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, sizes))), devices)


def load_model(cfg, checkpoint: str | None, seed: int, mesh_spec: str | None, param_dtype: str | None):
  """(model, config) sharded over the mesh: the checkpoint and its stored config when given, its parameters in
  `param_dtype` (default: the stored compute dtype model.dtype; training stores f32 weights and computes in
  bf16, and inference needs no more), else a random init of cfg.model."""
  from omnidiff_jax import sharding
  if checkpoint is not None:
    from omnidiff_jax import checkpoints
    from omnidiff_jax.checkpoints import orbax_io
    stored = orbax_io.read_config(checkpoint).model
    return checkpoints.load(checkpoint, mesh=make_mesh(mesh_spec, stored), dtype=param_dtype or stored.dtype)
  return sharding.create_model(cfg.model, make_mesh(mesh_spec, cfg.model), seed=seed), cfg


def describe_params(model) -> str:
  """'7.62 B parameters as bfloat16, 14.2 GiB in all on 4 devices' (dtypes of the nnx.Param leaves)."""
  import jax
  from flax import nnx
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  dtypes = sorted({leaf.dtype.name for leaf in leaves})
  devices = {d for leaf in leaves for d in leaf.sharding.device_set}
  return (f"{sum(leaf.size for leaf in leaves) / 1e9:.3g} B parameters as {'/'.join(dtypes)}, "
          f"{sum(leaf.nbytes for leaf in leaves) / 2**30:.3g} GiB in all on {len(devices)} devices")


def speech_encoder(model):
  """The SpeechEncoder of the --sensevoice* / --projector / --cmvn flags, the model's own projector and the
  checkpoint's carried-through SenseVoice tensors."""
  from omnidiff_jax.checkpoints import load_extra
  from omnidiff_jax.config import load_config_file
  from omnidiff_jax.sampling import inputs
  checkpoint = _CHECKPOINT.value
  spec = _SENSEVOICE_CONFIG.value or os.path.join(CONFIG_DIR, "sensevoice.py" if checkpoint else "sensevoice_tiny.py")
  sensevoice = load_extra(checkpoint, SENSEVOICE_PREFIX) if checkpoint and not _SENSEVOICE.value else None
  if sensevoice == {}:
    raise app.UsageError(f"--checkpoint {checkpoint} carries no SenseVoice tensors ({SENSEVOICE_PREFIX}*): pass "
                         "--sensevoice (tools/convert_checkpoint.py speech-in --kind=sensevoice)")
  return inputs.load_speech_encoder(load_config_file(spec), projector=model.audio_projection,
                                    projector_params=_PROJECTOR.value, sensevoice_params=_SENSEVOICE.value,
                                    sensevoice_tensors=sensevoice, cmvn_file=_CMVN.value, seed=_SEED.value)


def sample_inputs(model, vocab, overrides: dict):
  """generate_from_inputs on the --text / --image / --wav flags. Returns (SampleResult, SamplerConfig, prompt ids)."""
  from omnidiff_jax.sampling import inputs
  from omnidiff_jax.vocab import load_tokenizer, verify_tokenizer
  if _TOKENIZER.value is None:
    raise app.UsageError("--text / --image / --wav need --tokenizer (the checkpoint's tokenizer.json or its directory)")
  tokenizer = load_tokenizer(_TOKENIZER.value)
  verify_tokenizer(vocab, _TOKENIZER.value)
  image_tokenizer = (inputs.load_image_tokenizer(_MAGVIT_CONFIG.value, _MAGVIT.value, _SEED.value)
                     if _IMAGE.value else None)
  result, sampler_cfg, prompts = inputs.generate_from_inputs(
      model, vocab, tokenizer, _TASK.value, texts=_TEXT.value, images=_IMAGE.value, wavs=_WAV.value,
      image_tokenizer=image_tokenizer, speech_encoder=speech_encoder(model) if _WAV.value else None,
      image_resolution=_IMAGE_RES.value, text_len=_TEXT_LEN.value, seed=_SEED.value, **overrides)
  return result, sampler_cfg, [ids.tolist() for ids in prompts.ids]


def sample_ids(model, vocab, overrides: dict):
  """generate_task on --prompt_ids / --uncond_ids. Returns (SampleResult, SamplerConfig, prompt ids)."""
  from omnidiff_jax.sampling import generate_task
  prompts = _parse_ids(_PROMPT_IDS.value, "prompt_ids")
  uncond = _parse_ids(_UNCOND_IDS.value, "uncond_ids") if _UNCOND_IDS.value else None
  for ids in prompts + (uncond or []):
    bad = [i for i in ids if not 0 <= i < vocab.size]
    if bad:
      raise app.UsageError(f"token ids {bad} are outside the vocabulary [0, {vocab.size}) of --config")
  result, sampler_cfg = generate_task(model, vocab, _TASK.value, prompt_ids=prompts, text_len=_TEXT_LEN.value,
                                      uncond_ids=uncond, seed=_SEED.value, **overrides)
  return result, sampler_cfg, prompts


def write_media(task_rows: list[dict], seed: int) -> None:
  """PNGs of the image codes (--png_dir) and WAVs of the speech codes (--wav_dir), one file per row."""
  import numpy as np

  from omnidiff_jax.config import load_config_file
  if _PNG_DIR.value:
    from omnidiff_jax.models.magvit import preprocess as image_processing
    from omnidiff_jax.sampling import inputs
    rows = [i for i, r in enumerate(task_rows) if len(r.get("image", []))]
    model = inputs.load_image_tokenizer(_MAGVIT_CONFIG.value, _MAGVIT.value, seed).model
    os.makedirs(_PNG_DIR.value, exist_ok=True)
    paths = [os.path.join(_PNG_DIR.value, f"sample_{i}.png") for i in rows]
    if rows:
      codes = np.stack([np.asarray(task_rows[i]["image"], np.int32) for i in rows])
      image_processing.decode_to_pngs(model, codes, paths, batch_size=len(rows), desc="MAGVIT-v2 decode")
    print(f"wrote {len(paths)} PNGs to {_PNG_DIR.value} ({len(task_rows) - len(rows)} rows had no image codes)",
          file=sys.stderr)
  if _WAV_DIR.value:
    from omnidiff_jax.models.speech_out.decode import SpeechDecoder, build_models, decode_to_wav
    from omnidiff_jax.models.speech_out import params as speech_out_params
    rows = [i for i, r in enumerate(task_rows) if len(r.get("speech", []))]
    dcfg = load_config_file(_SPEECH_DECODER_CONFIG.value)
    if _SPEECH_DECODER.value:
      decoder = speech_out_params.load_decoder(dcfg, _SPEECH_DECODER.value)
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

  from omnidiff_jax import tasks
  from omnidiff_jax.sampling import PRESETS, inputs, split_outputs
  from omnidiff_jax.vocab import VocabLayout

  raw_inputs = any(flag.value for flag in (_TEXT, _IMAGE, _WAV))
  if (_PROMPT_IDS.value is None) == (not raw_inputs):
    raise app.UsageError("give either task inputs (--text / --image / --wav, with --tokenizer) or --prompt_ids "
                         "(comma-separated token ids; ';' between prompts)")
  if _TASK.value not in PRESETS:
    raise app.UsageError(f"unknown --task {_TASK.value!r}; choose one of {sorted(PRESETS)}")
  if _UNCOND_IDS.value and raw_inputs:
    raise app.UsageError("--uncond_ids goes with --prompt_ids; task inputs build s2i's unconditional prompt")
  # Every flag left unset keeps the task preset's value (omnidiff_jax.tasks).
  overrides = {flag.name: flag.value for flag in (
      _REGION, _STEPS, _ALG, _TEMPERATURE, _BLOCK, _THRESHOLD, _KV_CACHE, _MODE, _CFG_SCALE, _CFG_ALIGNMENT,
      _REPETITION_PENALTY, _POSITION_PENALTY) if flag.value is not None}
  try:
    if raw_inputs:  # before loading anything: the task's inputs and their files
      inputs.check_inputs(_TASK.value, _TEXT.value, _IMAGE.value, _WAV.value)
    model, cfg = load_model(_CONFIG.value, _CHECKPOINT.value, _SEED.value, _MESH.value, _PARAM_DTYPE.value)
    print(describe_params(model), file=sys.stderr)
    vocab = VocabLayout.from_config(cfg.vocab)
    start = time.perf_counter()
    result, sampler_cfg, prompts = (sample_inputs if raw_inputs else sample_ids)(model, vocab, overrides)
    tokens = np.asarray(result.tokens)
    seconds = time.perf_counter() - start
  except (ValueError, FileNotFoundError) as err:
    raise app.UsageError(str(err))
  print(f"task {_TASK.value}: {tokens.shape[0]} x {tokens.shape[1]} tokens in {seconds:.2f} s (incl. inputs and "
        f"compile), {int(result.steps)} steps, {int(result.full_forwards)} full + {int(result.cached_forwards)} "
        f"cached forwards; {sampler_cfg}", file=sys.stderr)
  modalities = tasks.presets()[_TASK.value][0].output.split("+")
  rows = [{"prompt": prompt, "tokens": row.tolist(),
           **{k: v.tolist() for k, v in split_outputs(row, vocab).items() if k in modalities}}
          for prompt, row in zip(prompts, tokens)]
  write_media(rows, _SEED.value)
  text = json.dumps({"task": _TASK.value, "results": rows})
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")
    print(f"wrote {_OUT.value}", file=sys.stderr)
  else:
    print(text)


if __name__ == "__main__":
  app.run(main)
