"""Sweeps of the tiny random models (tests, demos), 8 fake CPU devices as 2 data x 4 fsdp.

  mme (default): two settings over an MME-layout folder, 32 px images through the tiny MAGVIT-v2.
  tts: LibriTTS TTS with asr_model='self' (tiny speech decoder -> 16 kHz -> the tiny backbone's ASR task through
       the tiny SenseVoice), one sampled setting.

  python tools/eval.py --config configs/eval/tiny.py --workdir /tmp/eval_tiny --cpu_devices=8 \\
      --config.tokenizer=/tmp/tiny_tokenizer.json --config.benchmarks.mme.root=/tmp/fake_mme
  python tools/eval.py --config configs/eval/tiny.py:tts --workdir /tmp/eval_tts --cpu_devices=8 \\
      --config.tokenizer=/tmp/tiny_tokenizer.json --config.benchmarks.tts.root=/tmp/fake_libritts
"""
import ml_collections

from configs.eval.common import base_config, config_path

VARIANTS = ("mme", "tts")


def get_config(variant: str = "mme"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/eval/tiny.py:{variant}: unknown variant; choose one of {VARIANTS}")
  cfg = base_config()
  cfg.model_config = config_path("eval/tiny_backbone.py")
  cfg.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=-1, tensor=1))
  cfg.batch_size, cfg.shard_size, cfg.image_resolution = 4, 4, 32
  if variant == "tts":
    cfg.networks.speech_in_config = config_path("sensevoice_tiny.py")
    cfg.networks.speech_decoder_config = config_path("speech_decoder_tiny.py")
    cfg.benchmarks.tts = ml_collections.ConfigDict(dict(kind="libritts", root="", asr_model="self", limit=0))
    # Sampled, over a 96-position region: the random backbone then puts some of its 64 speech codes (of 8,680 ids)
    # in most regions, so the generated speech reaches the ASR pass. 8 steps (12 reveals each): the two-process
    # test (tests/test_eval_multihost.py) took 164 s alone with the preset's steps, 86 s with 8.
    cfg.settings = [dict(name="sampled96", temperature=1.0, region_len=96, steps=8)]
    return cfg
  cfg.networks.magvit_config = config_path("magvit.py:tiny")
  cfg.settings = [dict(name="steps4", steps=4), dict()]
  cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root="", limit=0, paper=1216.7))
  return cfg
