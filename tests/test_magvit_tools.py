"""MAGVIT-v2 preprocessing (vs upstream's torchvision transform, golden) and the tools/magvit.py CLI."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from configs import magvit as magvit_configs
from omnidiff_jax.checkpoints import magvit as magvit_ckpt
from omnidiff_jax.models import image_processing, magvit

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


def _load_tool():
  """tools/magvit.py as a module (loaded once: it defines absl flags)."""
  if "magvit_tool" not in sys.modules:
    spec = importlib.util.spec_from_file_location("magvit_tool", ROOT / "tools" / "magvit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["magvit_tool"] = module
  return sys.modules["magvit_tool"]


def test_cli_encode_decode_pngs(tmp_path):
  tool = _load_tool()
  cfg = magvit_configs.get_config("tiny")
  rng = np.random.default_rng(0)
  paths = []
  for i, size in enumerate([(40, 48), (70, 32), (32, 32)]):
    paths.append(str(tmp_path / f"img{i}.png"))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
  state_dict = magvit_ckpt.random_torch_state_dict(cfg.model, seed=5)
  checkpoint = str(tmp_path / "torch_layout.safetensors")
  save_file(state_dict, checkpoint)
  model = tool.load_model(cfg, checkpoint)

  # encode -> .json (batch 2: the last batch is padded) ...
  codes_file = str(tmp_path / "codes.json")
  tool.encode(model, paths, 32, codes_file, batch_size=2)
  with open(codes_file) as f:
    entries = json.load(f)
  reference = magvit_ckpt.model_from_torch_state_dict(cfg.model, state_dict)
  images = image_processing.load_batch(paths, 32)
  expected = magvit.encode_batched(reference, images, batch_size=2)
  assert [e["image"] for e in entries] == paths
  np.testing.assert_array_equal(np.array([e["codes"] for e in entries]), expected)

  # ... -> PNGs named after the sources, equal to the library's decode.
  codes, names = tool.read_codes(codes_file, 13)
  assert names == ["00000_img0.png", "00001_img1.png", "00002_img2.png"]
  tool.decode(model, codes, names, str(tmp_path / "decoded"), batch_size=3)
  pixels = image_processing.to_uint8(magvit.decode(reference, expected))
  for name, expected_png in zip(names, pixels):
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "decoded" / name)), expected_png)


def _run_tool(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, str(ROOT / "tools" / "magvit.py"), *args], capture_output=True, text=True,
                        env=env, timeout=300)


def test_cli_convert(tmp_path):
  cfg = magvit_configs.get_config("tiny")
  state_dict = magvit_ckpt.random_torch_state_dict(cfg.model, seed=6)
  save_file(state_dict, str(tmp_path / "pytorch_model.safetensors"))
  dst = str(tmp_path / "ours.safetensors")
  result = _run_tool("convert", "--config", str(ROOT / "configs" / "magvit.py") + ":tiny", "--src", str(tmp_path),
                     "--dst", dst)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"converted {len(state_dict)} tensors" in result.stdout
  converted = magvit_ckpt.load_magvit(cfg.model, dst)
  np.testing.assert_array_equal(np.asarray(converted.decoder.conv_out.kernel.get_value()),
                                state_dict["decoder.conv_out.weight"].transpose(2, 3, 1, 0))
  # The released config rejects the tiny checkpoint, naming the problems.
  result = _run_tool("convert", "--src", str(tmp_path), "--dst", dst)
  assert result.returncode != 0 and "missing key 'encoder.down.4.block.3.conv2.weight'" in result.stderr


def test_cli_rejects_bad_codes(tmp_path):
  bad = str(tmp_path / "bad.npy")
  np.save(bad, np.array([[0, 9000]]))
  result = _run_tool("decode", bad)
  assert result.returncode != 0 and "codes must lie in [0, 8192); got [0, 9000]" in result.stderr
  with pytest.raises(ValueError, match="must be .npy or .json"):
    _load_tool().read_codes(str(tmp_path / "codes.txt"), 13)
