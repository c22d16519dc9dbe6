"""MAGVIT-v2 preprocessing (vs upstream's torchvision transform, golden) and the tools/magvit.py CLI."""
import pathlib

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from configs import magvit as magvit_configs
from omnidiff_jax.models.magvit import params as magvit_ckpt
from omnidiff_jax.models.magvit import modeling as magvit, preprocess as image_processing
from tool_cli import run_tool

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "magvit_preprocess.npz"


def test_preprocess_matches_upstream_torchvision_exactly():
  golden = np.load(FIXTURE)
  count = len([k for k in golden if k.startswith("source_")])
  assert count == 5
  for i in range(count):
    ours = image_processing.preprocess(Image.fromarray(golden[f"source_{i}"]), 32)
    assert ours.dtype == np.float32 and ours.shape == (32, 32, 3)
    np.testing.assert_array_equal(ours, golden[f"expected_{i}"], err_msg=f"source {golden[f'source_{i}'].shape}")


def test_resize_and_crop_geometry():
  landscape = Image.new("RGB", (300, 200))
  assert image_processing.resize_shorter_side(landscape, 256).size == (384, 256)
  portrait = Image.new("RGB", (199, 401))
  assert image_processing.resize_shorter_side(portrait, 256).size == (256, 515)  # int(256 * 401 / 199)
  with pytest.raises(ValueError, match="smaller than the 32x32 crop"):
    image_processing.center_crop(Image.new("RGB", (40, 20)), 32)


def test_to_uint8_truncates_like_upstream():
  values = np.array([[[0.0, 0.5, 1.0], [-0.1, 0.9999, 1.5]]], np.float32)
  np.testing.assert_array_equal(image_processing.to_uint8(values), [[[0, 127, 255], [0, 254, 255]]])


def _pngs(tmp_path):
  rng = np.random.default_rng(0)
  paths = []
  for i, size in enumerate([(40, 48), (70, 32), (32, 32)]):
    paths.append(str(tmp_path / f"img{i}.png"))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
  return paths


def test_encode_and_decode_files(tmp_path):
  cfg = magvit_configs.get_config("tiny")
  paths = _pngs(tmp_path)
  checkpoint = str(tmp_path / "torch_layout.safetensors")
  save_file(magvit_ckpt.random_torch_state_dict(cfg.model, seed=0), checkpoint)
  model = magvit_ckpt.load_magvit(cfg.model, checkpoint)

  # Batch 2 over 3 images: the last batch is padded; rows must not depend on the batching.
  codes = image_processing.encode_files(model, paths, 32, batch_size=2)
  images = image_processing.load_batch(paths, 32)
  np.testing.assert_array_equal(codes, np.concatenate([magvit.encode(model, images[:2]),
                                                      magvit.encode(model, images[2:].repeat(2, 0))[:1]]))
  codes_file = str(tmp_path / "codes.json")
  image_processing.write_codes(codes_file, codes, paths)
  read, names = image_processing.read_codes(codes_file, 13)
  np.testing.assert_array_equal(read, codes)
  assert names == ["00000_img0.png", "00001_img1.png", "00002_img2.png"]

  out = [str(tmp_path / "decoded" / n) for n in names]
  image_processing.decode_to_pngs(model, codes, out, batch_size=2)
  pixels = image_processing.to_uint8(np.concatenate([magvit.decode(model, codes[:2]),
                                                     magvit.decode(model, codes[2:].repeat(2, 0))[:1]]))
  for path, expected in zip(out, pixels):
    np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)

  # The CLI (no --checkpoint: random weights of seed config.run.seed = 0, batch config.run.batch_size = 2)
  # writes the same codes and PNGs.
  tiny = ["--config", str(ROOT / "configs" / "magvit.py") + ":tiny"]
  result = _run_tool("encode", *tiny, "--output", str(tmp_path / "cli.npy"), *paths)
  assert result.returncode == 0 and "random MAGVIT-v2" in result.stderr, result.stderr[-3000:]
  np.testing.assert_array_equal(np.load(tmp_path / "cli.npy"), codes)
  result = _run_tool("decode", *tiny, "--output_dir", str(tmp_path / "cli"), str(tmp_path / "cli.npy"))
  assert result.returncode == 0, result.stderr[-3000:]
  for i, expected in enumerate(pixels):
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli" / f"{i:05d}.png")), expected)


def _run_tool(*args):
  return run_tool("magvit", *args, timeout=300)


def test_cli_rejects_bad_codes(tmp_path):
  bad = str(tmp_path / "bad.npy")
  np.save(bad, np.array([[0, 9000]]))
  result = _run_tool("decode", bad)
  assert result.returncode != 0 and "codes must lie in [0, 8192); got [0, 9000]" in result.stderr
  with pytest.raises(ValueError, match="must end in .npy or .json"):
    image_processing.read_codes(str(tmp_path / "codes.txt"), 13)
  with pytest.raises(FileNotFoundError, match="no such image file"):
    image_processing.encode_files(None, [str(tmp_path / "missing.png")], 32, 2)
