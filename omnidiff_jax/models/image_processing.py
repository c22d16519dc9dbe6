"""Image pre/post-processing for the MAGVIT-v2 tokenizer, as upstream does it (PIL + numpy, no torch).

Upstream (`omni_diffusion/data/processor/image_processor.py::image_transform`): PIL RGB image ->
torchvision Resize(res, BICUBIC) on the shorter side -> CenterCrop(res) -> ToTensor -> Normalize(0.5, 0.5),
i.e. values in [-1, 1]. Here the same steps produce NHWC float32 (res, res, 3). Decoded images go back as
upstream's `tools/inference.py` does: uint8(clamp((x + 1) / 2, 0, 1) * 255), truncating.
"""
from __future__ import annotations

import os
from typing import Iterable

import numpy as np
from PIL import Image


def load_image(path: str) -> Image.Image:
  """Opens an image file as RGB (upstream: Image.open(path).convert('RGB'))."""
  try:
    with Image.open(path) as image:
      return image.convert("RGB")
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read as an image ({e})") from e


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
  """torchvision Resize(size, BICUBIC) on a PIL image: the shorter side becomes `size`, the longer one
  int(size * long / short); PIL's bicubic filter (antialiased). An image already at that size is returned."""
  w, h = image.size
  short, long = min(w, h), max(w, h)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  if (new_w, new_h) == (w, h):
    return image
  return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
  """torchvision CenterCrop(size) for an image at least `size` on both sides (offsets use Python's round)."""
  w, h = image.size
  if w < size or h < size:
    raise ValueError(f"image of {w}x{h} is smaller than the {size}x{size} crop")
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, resolution: int) -> np.ndarray:
  """PIL image -> float32 (resolution, resolution, 3) in [-1, 1], exactly as upstream's image_transform."""
  image = center_crop(resize_shorter_side(image.convert("RGB"), resolution), resolution)
  pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
  return (pixels - np.float32(0.5)) / np.float32(0.5)


def load_batch(paths: Iterable[str], resolution: int) -> np.ndarray:
  """Image files -> float32 (B, resolution, resolution, 3) in [-1, 1]."""
  return np.stack([preprocess(load_image(p), resolution) for p in paths])


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Decoded images in [0, 1] (..., 3) -> uint8, truncating like upstream's `.astype(np.uint8)` of x * 255."""
  return (np.clip(np.asarray(images, np.float32), 0, 1) * np.float32(255)).astype(np.uint8)


def save_png(image: np.ndarray, path: str) -> None:
  """uint8 (H, W, 3) RGB -> PNG file (upstream writes the same pixels through cv2 after RGB -> BGR)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{path}: expected uint8 (H, W, 3) pixels, got {image.dtype} {image.shape}")
  Image.fromarray(image).save(path, format="PNG")
