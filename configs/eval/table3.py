"""Paper Table 3 (sampling steps): T2I and S2I at 256 / 50 / 10 steps (CLIP-T / CLIP-I on 10K COCO-2014 val
captions; S2I: the captions spoken by CosyVoice2) and TTS at 0.5L / 0.25L / 0.125L steps (LibriTTS WER).

  python tools/eval.py --config configs/eval/table3.py --workdir /ckpt/eval/table3 --cpu_devices=0 \\
      --config.checkpoint=/ckpt/omni_orbax --config.tokenizer=/ckpt/Omni-Diffusion \\
      --config.networks.magvit=/ckpt/magvit.safetensors --config.networks.clip_path=/ckpt/clip-vit-large-patch14 \\
      --config.networks.cmvn=/ckpt/SenseVoiceSmall/am.mvn --config.networks.speech_decoder=/ckpt/decoder_ours \\
      --config.networks.whisper_path=/ckpt/whisper-large-v3 \\
      --config.benchmarks.t2i.annotations=/data/coco/annotations/captions_val2014.json \\
      --config.benchmarks.t2i.images=/data/coco/val2014 --config.benchmarks.s2i.manifest=/data/coco_s2i.jsonl \\
      --config.benchmarks.tts.root=/data/LibriTTS
S2I reads a JSONL manifest of the spoken captions (user <|audio|>, assistant <|image|> = the COCO image).
"""
import ml_collections

from configs.eval.common import base_config

IMAGE_STEPS = [dict(name="steps256", steps=256), dict(name="steps50", steps=50), dict(name="steps10", steps=10)]
TTS_STEPS = [dict(name="half_L", steps_fraction=0.5), dict(name="quarter_L", steps_fraction=0.25),
             dict(name="eighth_L", steps_fraction=0.125)]


def _image_paper(clip_t, clip_i):
  return {f"steps{s}": dict(clip_t=t, clip_i=i) for s, t, i in zip((256, 50, 10), clip_t, clip_i)}


def get_config():
  cfg = base_config()
  cfg.benchmarks.t2i = ml_collections.ConfigDict(dict(
      kind="coco_t2i", annotations="", images="", manifest="", limit=10000, seed=0, settings=IMAGE_STEPS,
      paper=_image_paper((0.235, 0.233, 0.226), (0.667, 0.662, 0.650))))
  cfg.benchmarks.s2i = ml_collections.ConfigDict(dict(
      kind="coco_s2i", manifest="", limit=10000, settings=IMAGE_STEPS,
      paper=_image_paper((0.225, 0.229, 0.231), (0.645, 0.649, 0.648))))
  cfg.benchmarks.tts = ml_collections.ConfigDict(dict(
      kind="libritts", root="", split="test-clean", manifest="", tfds_data_dir="", tfds_name="libritts",
      tfds_split="test_clean", asr_model="whisper", limit=0, settings=TTS_STEPS,
      paper=dict(half_L=3.07, quarter_L=3.74, eighth_L=4.83)))
  return cfg
