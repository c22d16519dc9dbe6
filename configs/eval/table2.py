"""Paper Table 2 (vision): POPE 76.6, MME-P 1216.7, Seed-2-Plus 34.5, CLIP-T 0.235 / CLIP-I 0.667 (T2I on 10,000
random MSCOCO-2014 val captions, Emu protocol).

  python tools/eval.py --config configs/eval/table2.py --workdir /ckpt/eval/table2 --cpu_devices=0 \\
      --config.checkpoint=/ckpt/omni_orbax --config.tokenizer=/ckpt/Omni-Diffusion \\
      --config.networks.magvit=/ckpt/magvit.safetensors --config.networks.clip_path=/ckpt/clip-vit-large-patch14 \\
      --config.benchmarks.pope.pope_dir=/data/POPE/output/coco \\
      --config.benchmarks.pope.coco_images=/data/coco/val2014 \\
      --config.benchmarks.mme.root=/data/MME_Benchmark_release_version \\
      --config.benchmarks.seed2plus.json_path=/data/SEED-Bench-2-plus/SEED-Bench-2-plus-text-rich.json \\
      --config.benchmarks.seed2plus.image_root=/data/SEED-Bench-2-plus \\
      --config.benchmarks.coco_t2i.annotations=/data/coco/annotations/captions_val2014.json \\
      --config.benchmarks.coco_t2i.images=/data/coco/val2014
POPE's headline is the F1 averaged over the three splits, in percent (headline="accuracy" for the averaged
accuracy). UNVERIFIED: the paper does not say which POPE number 76.6 is and upstream has no POPE script; see
omnidiff_jax/eval/evaluators/pope.py for what was checked. CLIP-T / CLIP-I use the CLIP at networks.clip_path;
which CLIP the paper used is UNVERIFIED too (see omnidiff_jax/eval/evaluators/coco_t2i.py).
"""
import ml_collections

from configs.eval.common import base_config


def get_config():
  cfg = base_config()
  cfg.benchmarks.pope = ml_collections.ConfigDict(dict(
      kind="pope", pope_dir="", coco_images="", splits=("random", "popular", "adversarial"), preset="mme",
      headline="f1", limit=0, paper=76.6))
  cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root="", limit=0, paper=1216.7))
  cfg.benchmarks.seed2plus = ml_collections.ConfigDict(dict(
      kind="seed2plus", json_path="", image_root="", preset="mme", limit=0, paper=34.5))
  cfg.benchmarks.coco_t2i = ml_collections.ConfigDict(dict(
      kind="coco_t2i", annotations="", images="", manifest="", limit=10000, seed=0,
      paper=dict(default=dict(clip_t=0.235, clip_i=0.667))))
  return cfg
