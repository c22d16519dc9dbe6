"""MAGVIT-v2 checkpoint conversion: torch layout <-> ours, file formats, and the one-error-lists-all report."""
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

from configs import magvit as magvit_configs
from omnidiff_jax.models.magvit import params as magvit_ckpt


@pytest.fixture(scope="module")
def cfg():
  return magvit_configs.get_config("tiny").model


@pytest.fixture(scope="module")
def state_dict(cfg):
  return magvit_ckpt.random_torch_state_dict(cfg, seed=3)


def _params(model):
  return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_name_map_layouts(cfg):
  names = {n.torch_key: n for n in magvit_ckpt.param_names(cfg)}
  conv = names["encoder.down.1.block.0.conv1.weight"]
  assert (conv.path, conv.layout, conv.shape, conv.torch_shape) == (
      ("encoder", "down", 1, "block", 0, "conv1", "kernel"), "conv", (3, 3, 32, 32), (32, 32, 3, 3))
  # nin_shortcut only where a block changes channels: encoder level 2 (32 -> 64), decoder level 0 (64 -> 32).
  assert names["encoder.down.2.block.0.nin_shortcut.weight"].torch_shape == (64, 32, 1, 1)
  assert names["decoder.up.0.block.0.nin_shortcut.weight"].shape == (64, 32)
  assert not any("nin_shortcut" in k for k in names if k.startswith(("encoder.down.1", "decoder.up.1")))
  assert names["encoder.mid.attn_1.q.weight"].torch_shape == (64, 64, 1, 1)
  assert names["decoder.up.0.block.0.norm1.weight"].path[-1] == "scale"
  assert "decoder.up.0.upsample.conv.weight" not in names and "decoder.up.2.upsample.conv.weight" in names
  assert "encoder.down.2.downsample.conv.weight" not in names and "encoder.down.1.downsample.conv.weight" in names
  rng = np.random.default_rng(0)
  for name in names.values():
    tensor = rng.standard_normal(name.torch_shape).astype(np.float32)
    ours = magvit_ckpt.to_ours(name, tensor)
    assert ours.shape == name.shape
    np.testing.assert_array_equal(magvit_ckpt.to_torch(name, ours), tensor)


def test_conv_kernel_transpose_matches_torch_conv(cfg):
  # (O, I, kH, kW) -> (kH, kW, I, O): our NHWC conv with the converted kernel equals torch's NCHW conv.
  name = next(n for n in magvit_ckpt.param_names(cfg) if n.layout == "conv" and n.shape[2] != n.shape[3])
  weight = np.random.default_rng(1).standard_normal(name.torch_shape).astype(np.float32)
  x = np.random.default_rng(2).standard_normal((1, 5, 6, name.shape[2])).astype(np.float32)
  ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(weight), padding=1)
  conv = nnx.Conv(name.shape[2], name.shape[3], (3, 3), use_bias=False, rngs=nnx.Rngs(0))
  conv.kernel.set_value(magvit_ckpt.to_ours(name, weight))
  np.testing.assert_allclose(np.asarray(conv(x)), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "directory"])
def test_convert_and_load(tmp_path, cfg, state_dict, fmt):
  with_buffers = dict(state_dict, **{"quantize.embedding": np.zeros((8192, 13), np.float32),
                                     "quantize.power_vals": np.arange(13)})
  if fmt == "safetensors":
    src = str(tmp_path / "magvit.safetensors")
    save_file(with_buffers, src)
  else:
    src = str(tmp_path / "pytorch_model.bin")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in with_buffers.items()}, src)
    src = str(tmp_path) if fmt == "directory" else src
  dst = str(tmp_path / "out" / "magvit_ours.safetensors")
  assert magvit_ckpt.convert_magvit(src, dst, cfg) == len(state_dict)
  expected = _params(magvit_ckpt.model_from_torch_state_dict(cfg, state_dict))
  for loaded in (magvit_ckpt.load_magvit(cfg, dst), magvit_ckpt.load_magvit(cfg, src)):
    got = _params(loaded)
    assert got.keys() == expected.keys()
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_mismatch_lists_every_problem(cfg, state_dict):
  broken = dict(state_dict)
  del broken["encoder.conv_in.weight"]
  del broken["decoder.mid.attn_1.k.bias"]
  broken["encoder.mid.attn_2.q.weight"] = np.zeros((64, 64, 1, 1), np.float32)
  broken["decoder.conv_out.weight"] = np.zeros((3, 64, 3, 3), np.float32)
  with pytest.raises(ValueError) as err:
    magvit_ckpt.convert_state_dict(broken, cfg)
  message = str(err.value)
  assert "(4 problems)" in message
  assert "missing key 'encoder.conv_in.weight' (expected shape (32, 3, 3, 3))" in message
  assert "missing key 'decoder.mid.attn_1.k.bias'" in message
  assert "unexpected key 'encoder.mid.attn_2.q.weight' with shape (64, 64, 1, 1)" in message
  assert "decoder.conv_out.weight: shape (3, 64, 3, 3), expected (3, 32, 3, 3)" in message


def test_converted_file_for_another_config_is_rejected(tmp_path, cfg, state_dict):
  dst = str(tmp_path / "tiny.safetensors")
  save_file(magvit_ckpt.convert_state_dict(state_dict, cfg), dst, metadata={"format": magvit_ckpt.FORMAT})
  other = magvit_configs.get_config("tiny").model
  other.decoder_num_res_blocks = (1, 1, 1)
  with pytest.raises(ValueError, match="unexpected key 'decoder/up/0/block/1/conv1/kernel'"):
    magvit_ckpt.load_magvit(other, dst)


def test_missing_checkpoint_errors(tmp_path, cfg):
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
    magvit_ckpt.read_state_dict(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
    magvit_ckpt.load_magvit(cfg, str(tmp_path / "nope.safetensors"))


def test_convert_checkpoint_cli_magvit_subcommand(tmp_path, cfg, state_dict):
  from tool_cli import run_tool
  src, dst = str(tmp_path / "magvit.safetensors"), str(tmp_path / "ours.safetensors")
  save_file(state_dict, src)
  run = run_tool("convert_checkpoint", "magvit", src, dst, "--config=configs/magvit.py:tiny")
  assert run.returncode == 0 and f"converted {len(state_dict)} tensors" in run.stdout, run.stderr[-3000:]
  loaded = _params(magvit_ckpt.load_magvit(cfg, dst))
  expected = _params(magvit_ckpt.model_from_torch_state_dict(cfg, state_dict))
  assert all(np.array_equal(loaded[k], expected[k]) for k in expected)
  broken = dict(state_dict)
  broken.pop(sorted(broken)[0])
  save_file(broken, src)
  run = run_tool("convert_checkpoint", "magvit", src, tmp_path / "bad.safetensors", "--config=configs/magvit.py:tiny")
  assert run.returncode == 1 and "problems" in run.stderr
  # The released config (the default) rejects the tiny checkpoint, naming the problems.
  run = run_tool("convert_checkpoint", "magvit", src, tmp_path / "bad.safetensors")
  assert run.returncode == 1 and "missing key 'encoder.down.4.block.3.conv2.weight'" in run.stderr
