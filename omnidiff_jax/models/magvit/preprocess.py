"""Image pre/post-processing and file I/O for the MAGVIT-v2 tokenizer, as upstream does it (PIL + numpy).

Upstream (`omni_diffusion/data/processor/image_processor.py::image_transform`): PIL RGB image ->
torchvision Resize(res, BICUBIC) on the shorter side -> CenterCrop(res) -> ToTensor -> Normalize(0.5, 0.5),
i.e. values in [-1, 1]. Here the same steps produce NHWC float32 (res, res, 3). Decoded images go back as
upstream's `tools/inference.py` does: uint8(clamp((x + 1) / 2, 0, 1) * 255), truncating.

Codes files (tools/magvit.py, tools/tokenize_data.py, the sampler): .npy int32 (N, L), or .json
[{"image": source path, "codes": [...]}, ...].
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

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


def write_codes(path: str, codes: np.ndarray, image_paths: Sequence[str]) -> None:
  """codes (N, L) of the images at image_paths -> .npy (codes only) or .json (with the image paths)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".json"):
    with open(path, "w") as f:
      json.dump([{"image": p, "codes": c.tolist()} for p, c in zip(image_paths, codes)], f)
  elif path.endswith(".npy"):
    np.save(path, np.asarray(codes, np.int32))
  else:
    raise ValueError(f"{path}: a codes file must end in .npy or .json")


def read_codes(path: str, bits: int) -> tuple[np.ndarray, list[str]]:
  """Codes file -> (codes int32 (N, L), PNG names: '00000_<source stem>.png' for .json, else '00000.png').
  Every code must lie in [0, 2**bits)."""
  if path.endswith(".json"):
    with open(path) as f:
      entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "codes" in e for e in entries):
      raise ValueError(f"{path}: expected a list of {{'image': ..., 'codes': [...]}} objects")
    codes = np.asarray([e["codes"] for e in entries])
    names = [f"{i:05d}_" + os.path.splitext(os.path.basename(e.get("image", "")))[0] + ".png"
             for i, e in enumerate(entries)]
  elif path.endswith(".npy"):
    codes = np.load(path)
    names = [f"{i:05d}.png" for i in range(len(codes))]
  else:
    raise ValueError(f"{path}: a codes file must end in .npy or .json")
  if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{path}: expected integer codes of shape (N, L), got {codes.dtype} {codes.shape}")
  if codes.min() < 0 or codes.max() >= 2 ** bits:
    raise ValueError(f"{path}: codes must lie in [0, {2 ** bits}); got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32), names


def encode_files(model, paths: Sequence[str], resolution: int, batch_size: int, desc: str | None = None):
  """Image files -> codes int32 (N, (resolution / f) ** 2) with `model` (a MagvitV2), batch_size at a time."""
  from omnidiff_jax.models.magvit import modeling as magvit

  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
  return magvit.encode_batched(model, load_batch(paths, resolution), batch_size, desc)


def decode_to_pngs(model, codes: np.ndarray, paths: Sequence[str], batch_size: int,
                   grid: tuple[int, int] | None = None, desc: str | None = None) -> None:
  """codes (N, h*w) -> one RGB PNG per row at paths[i], decoded by `model` (a MagvitV2)."""
  from omnidiff_jax.models.magvit import modeling as magvit

  if len(paths) != len(codes):
    raise ValueError(f"{len(codes)} rows of codes but {len(paths)} output paths")
  images = to_uint8(magvit.decode_batched(model, codes, batch_size, grid, desc))
  for path, image in zip(paths, images):
    save_png(image, path)
