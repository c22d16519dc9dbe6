"""Shared sections of the eval configs (tools/eval.py; omnidiff_jax/eval/runner.py).

  checkpoint       our Orbax checkpoint (converted or trained); empty = random weights of model_config (demos, tests)
  model_config     the backbone config file[:arg] used without a checkpoint (vocab and model sections)
  tokenizer        the tokenizer directory / tokenizer.json (the Omni-Diffusion release); required
  mesh             (data, fsdp, tensor): prompts are split over data (and hosts); the model is sharded as in training
  batch_size       global rows per model batch (a multiple of mesh.data)
  prompt_bucket    prompts are left-padded to a multiple of this (one compile per bucket and region length)
  shard_size       samples per cell; finished cells are skipped on resume
  image_resolution side of user images before MAGVIT-v2 (0 = upstream's 512 px)
  seed             random weights without a checkpoint; each sample samples from key(eval.generate.sample_seed(seed,
                   its id)), the same in any batch, shard or host layout
  networks         the other networks: MAGVIT-v2, SenseVoice (speech in), GLM-4-Voice decoder (speech out), CLIP
                   (CLIP-T / CLIP-I), Whisper (TTS WER); empty weight paths = random weights with a warning,
                   except clip_path / whisper_path, which must be local transformers directories
  settings         the sampler grid (runner.py: SamplerConfig fields, steps_fraction, region_len, name);
                   [{}] = each preset's upstream settings, named 'default'
  distributed      jax.distributed settings (as training's: empty coordinator_address = auto-detect or one process)
  benchmarks       name -> section with kind (evaluators.KINDS), reader fields, optional preset / limit /
                   settings (own grid) / paper (a number for 'default', or {setting name: number}); libritts
                   also takes asr_model: 'whisper' (networks.whisper_path) or 'self' (our model's ASR task)
"""
import os

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_path(name: str) -> str:
  """A file under configs/ (by absolute path, so tools run from any directory find it)."""
  return os.path.join(ROOT, "configs", name)


def base_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.checkpoint = ""
  cfg.model_config = config_path("omni_7b.py")
  cfg.tokenizer = ""
  cfg.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  cfg.batch_size = 8
  cfg.prompt_bucket = 64
  cfg.shard_size = 256
  cfg.image_resolution = 0
  cfg.seed = 0
  cfg.networks = ml_collections.ConfigDict(dict(
      magvit_config=config_path("magvit.py"), magvit="", speech_in_config=config_path("sensevoice.py"),
      sensevoice="", cmvn="", speech_decoder_config=config_path("speech_decoder.py"), speech_decoder="",
      clip_path="", whisper_path=""))
  cfg.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0, cpu_collectives="gloo"))
  cfg.settings = [{}]
  cfg.benchmarks = ml_collections.ConfigDict()
  return cfg
