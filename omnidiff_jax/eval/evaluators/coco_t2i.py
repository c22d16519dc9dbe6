"""Text / speech to image on COCO val2014 (paper Table 2: CLIP-T 0.235, CLIP-I 0.667 on 10K captions, Emu
protocol; Table 3: the same at 256 / 50 / 10 steps, and S2I with the captions spoken). The image codes of the
region are decoded by MAGVIT-v2 to a PNG, then CLIP-T = cos(caption, image) and CLIP-I = cos(image, real image)
with the CLIP of networks.clip_path. A sample without image codes (or whose decoding fails) scores 0 on both.

t2i reads COCO captions (cfg.annotations, cfg.images; cfg.limit captions drawn with cfg.seed) or a manifest; s2i
reads a JSONL manifest of spoken captions (cfg.manifest: user <|audio|>, assistant <|image|> = the real image).
Without a caption (s2i manifests) CLIP-T is nan and CLIP-I is the headline.

Which CLIP the paper used is UNVERIFIED (checked 2026-11-30): the paper (arXiv 2603.06577, Tables 2-3) says only
"following the Emu protocol" on 10K random COCO-2014 val captions, and upstream (VITA-MLLM/Omni-Diffusion, commit
c4f4625) ships no CLIP code. The configs' examples use openai/clip-vit-large-patch14 (ViT-L/14, the usual choice
for CLIP-T / CLIP-I in the compared works), so scores are comparable with the paper's only if that guess holds."""
from __future__ import annotations

import numpy as np
from PIL import Image

from omnidiff_jax.eval import readers
from omnidiff_jax.eval.evaluators.base import Evaluator, ensure_parent
from omnidiff_jax.sampling import presets


class CocoT2I(Evaluator):
  preset = "t2i"
  metric = "clip_t"
  sources = (("annotations", "images"), ("manifest",))

  def read(self):
    if self.cfg.get("manifest"):
      return readers.manifest(self.cfg.manifest)
    return readers.coco_captions(self.field("annotations"), self.field("images"), self.cfg.get("limit") or None,
                                 self.cfg.get("seed", 0))

  def samples(self):
    # coco_captions draws its `limit` captions at random; a manifest is cut to its first `limit`.
    return super().samples() if self.cfg.get("manifest") else self.read()

  def decode(self, sample, tokens, prefix):
    from omnidiff_jax.models.magvit import preprocess
    codes = presets.split_outputs(tokens, self.ctx.vocab)["image"]
    if not len(codes):
      raise ValueError("the region holds no image codes")
    path = ensure_parent(prefix + ".png")
    preprocess.decode_to_pngs(self.ctx.image_tokenizer.model, codes[None], [path], batch_size=1)
    image = Image.open(path).convert("RGB")
    caption = sample.reference.get("caption") or sample.inputs.get("text", "")
    real = Image.open(sample.reference["image"]).convert("RGB")
    clip_t = float(self.ctx.clip.clip_t([caption], [image])[0]) if caption else float("nan")
    return dict(output="", files={"png": path}, metric=dict(clip_t=clip_t, clip_i=float(self.ctx.clip.clip_i(
        [image], [real])[0])))

  def failed(self, sample):
    return dict(clip_t=0.0, clip_i=0.0)

  def score(self, records):
    out = {}
    for key in ("clip_t", "clip_i"):
      values = np.array([r["metric"][key] for r in records], np.float64)
      out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


class CocoS2I(CocoT2I):
  preset = "s2i"
  metric = "clip_i"
  sources = (("manifest",),)
