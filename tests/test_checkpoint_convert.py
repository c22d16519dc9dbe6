"""HF safetensors <-> Orbax conversion on tiny models: logits parity with transformers, restore onto other
meshes, byte-identical round trip, dtype cast, vocabulary expansion and the CLI."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
import torch

torch_reference = pytest.importorskip("torch_reference")

from omnidiff_jax import config as cfglib  # noqa: E402
from omnidiff_jax import sharding  # noqa: E402
from omnidiff_jax.checkpoints import convert, load, load_extra, orbax_io, safetensors_io  # noqa: E402
from omnidiff_jax.models.dream import params as hf_names  # noqa: E402
from tool_cli import run_tool  # noqa: E402

EXTRA = {  # a stand-in for Omni's SenseVoice encoder weights (carried through under 'extra')
    "model.audio_model.encoder.layers.0.norm.bias": np.arange(5, dtype=np.float32),
}
PROJECTOR = {  # Omni's audio projector, 4 -> 128 (converted into params/audio_projection)
    "model.audio_projection.pre_proj_layernorm.weight": np.linspace(0.5, 1.5, 4, dtype=np.float32),
    "model.audio_projection.pre_proj_layernorm.bias": np.linspace(-0.1, 0.1, 4, dtype=np.float32),
    "model.audio_projection.mlp.0.weight": np.linspace(-1, 1, 512, dtype=np.float32).reshape(128, 4),
    "model.audio_projection.mlp.2.weight": np.linspace(-1, 1, 128 * 128, dtype=np.float32).reshape(128, 128),
}


def _tiny():
  from configs import tiny
  return tiny.get_config()


@pytest.fixture(scope="module")
def reference():
  return torch_reference.random_qwen2(_tiny().model, seed=0)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, reference):
  """transformers' own save_pretrained output, sharded into several files."""
  path = tmp_path_factory.mktemp("hf") / "tiny"
  reference.save_pretrained(path, max_shard_size="300KB")
  assert len(list(path.glob("*.safetensors"))) > 1
  return path


@pytest.fixture(scope="module")
def orbax_dir(tmp_path_factory, hf_dir):
  out = tmp_path_factory.mktemp("orbax") / "ckpt"
  convert.hf_to_orbax(hf_dir, out, config=_tiny(), progress=False)
  return out


@pytest.fixture(scope="module")
def bf16_hf_dir(tmp_path_factory, reference):
  """A bf16 checkpoint written with safetensors (one file) including Omni's projector and extra weights."""
  path = tmp_path_factory.mktemp("hf_bf16") / "tiny"
  path.mkdir()
  tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in reference.state_dict().items()}
  tensors.update({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in {**EXTRA, **PROJECTOR}.items()})
  from safetensors.torch import save_file as torch_save_file
  torch_save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  config = reference.config.to_dict()
  (path / "config.json").write_text(json.dumps(config))
  return path


def test_parity_with_transformers_fp32(orbax_dir, reference):
  model, cfg = load(orbax_dir)
  assert cfg.vocab.size == 320 and cfg.model.param_dtype == "float32"
  ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (2, 48), dtype=np.int32)
  want = torch_reference.bidirectional_logits(reference, ids)
  got = np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(ids)))[..., :cfg.model.vocab_size]
  assert np.abs(got - want).max() <= 3e-6  # measured 4.2e-7


@pytest.mark.parametrize("write_mesh,read_mesh,read_devices", [
    ((2, 2, 2), (1, 2, 4), 8),   # converted sharded, restored with another layout
    (None, (1, 4, 1), 4),        # converted unsharded on 8 devices, restored sharded onto 4
])
def test_restore_onto_different_mesh(tmp_path, hf_dir, reference, write_mesh, read_mesh, read_devices):
  cfg = _tiny()
  devices = jax.devices()[:read_devices]

  def mesh(sizes, devs):
    return sharding.make_mesh(ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, sizes))), devs)

  convert.hf_to_orbax(hf_dir, tmp_path / "ck", config=cfg, progress=False,
                      mesh=None if write_mesh is None else mesh(write_mesh, jax.devices()))
  model, _ = load(tmp_path / "ck", mesh=mesh(read_mesh, devices))
  kernel = model.layers.mlp.up_proj.kernel.get_value()
  assert len(kernel.sharding.device_set) == read_devices
  assert tuple(kernel.sharding.spec) == (None, "fsdp", "tensor")
  weights = torch_reference.state_dict_numpy(reference)
  for name in hf_names.backbone_names():
    value = np.asarray(_param(model, name.path))
    want = hf_names.to_ours(name, weights.__getitem__, cfg.model.num_layers)  # padding rows: zeros
    np.testing.assert_array_equal(value, hf_names.vocab_rows(name, want, cfglib.padded_vocab_size(cfg.model)))


def _param(model, path):
  node = model
  for p in path:
    node = getattr(node, p)
  return node.get_value()


def test_round_trip_is_byte_identical(tmp_path, bf16_hf_dir):
  info = convert.hf_to_orbax(bf16_hf_dir, tmp_path / "ck", config=_tiny(), progress=False)
  assert sorted(info["extra_keys"]) == sorted(EXTRA)
  extra = load_extra(tmp_path / "ck")
  for key, value in EXTRA.items():
    np.testing.assert_array_equal(extra[key].astype(np.float32), value.astype(ml_dtypes.bfloat16).astype(np.float32))
  assert info["config"]["model"]["param_dtype"] == "bfloat16"
  assert info["config"]["model"]["audio_projector"]["param_dtype"] == "bfloat16"
  model, _ = load(tmp_path / "ck")  # the projector is part of the model, HF (out, in) -> our (in, out)
  np.testing.assert_array_equal(np.asarray(model.audio_projection.linear_2.kernel.get_value(), np.float32),
                                PROJECTOR["model.audio_projection.mlp.2.weight"].astype(ml_dtypes.bfloat16).T)
  convert.orbax_to_hf(tmp_path / "ck", tmp_path / "hf", max_shard_size="100KB", progress=False)
  index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  before, after = (safetensors_io.HFCheckpoint(d).read_all() for d in (bf16_hf_dir, tmp_path / "hf"))
  assert sorted(before) == sorted(after)
  for key in before:
    assert before[key].dtype == after[key].dtype and before[key].shape == after[key].shape, key
    assert before[key].tobytes() == after[key].tobytes(), key
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["vocab_size"] == 320 and config["num_hidden_layers"] == 2


def test_exported_directory_loads_in_transformers(tmp_path, orbax_dir, reference):
  import transformers
  convert.orbax_to_hf(orbax_dir, tmp_path / "hf", progress=False)
  back = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
  want = reference.state_dict()
  for key, value in back.state_dict().items():
    assert torch.equal(value, want[key]), key
  ids = np.random.default_rng(1).integers(0, 320, (1, 16), dtype=np.int32)
  np.testing.assert_allclose(torch_reference.bidirectional_logits(back, ids),  # sdpa vs eager attention
                             torch_reference.bidirectional_logits(reference, ids), atol=1e-5)


def test_dtype_cast_and_load_dtype(tmp_path, hf_dir, reference):
  convert.hf_to_orbax(hf_dir, tmp_path / "ck", config=_tiny(), dtype="bfloat16", progress=False)
  model, cfg = load(tmp_path / "ck")
  assert cfg.model.param_dtype == "bfloat16"
  embed = model.embed_tokens.embedding.get_value()
  assert embed.dtype == jnp.bfloat16
  want = reference.model.embed_tokens.weight.detach().to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(np.asarray(embed, np.float32)[:320], want)
  model32, cfg32 = load(tmp_path / "ck", dtype="float32")
  assert cfg32.model.param_dtype == "float32"
  assert model32.embed_tokens.embedding.get_value().dtype == jnp.float32


def _dream_like_tiny_dir(tmp_path):
  """A tiny 'Dream layout' checkpoint: text ids only (200) padded to 224 rows (256 in our layout)."""
  cfg = _tiny()
  cfg.vocab = cfglib.vocab_config(text_size=200, num_specials=0, num_audio_codes=0, num_image_codes=0, size=224)
  cfg.model.vocab_size = 224
  hf = tmp_path / "dream_hf"
  torch_reference.random_qwen2(cfg.model, seed=3).save_pretrained(hf)
  convert.hf_to_orbax(hf, tmp_path / "dream", config=cfg, progress=False)
  return tmp_path / "dream"


def test_expand_vocab(tmp_path):
  src = _dream_like_tiny_dir(tmp_path)
  target = _tiny().vocab
  convert.expand_vocab(src, tmp_path / "a", vocab=target, seed=7, progress=False)
  old, _ = load(src)
  new, cfg = load(tmp_path / "a")
  assert cfg.vocab.to_dict() == target.to_dict() and cfg.model.vocab_size == 320
  e_old, e_new = np.asarray(old.embed_tokens.embedding.get_value()), np.asarray(new.embed_tokens.embedding.get_value())
  h_old, h_new = np.asarray(old.lm_head.kernel.get_value()), np.asarray(new.lm_head.kernel.get_value())
  # Padded to multiples of 128 rows: 224 -> 256 before, 320 -> 384 after (the padding rows are zeros).
  assert e_old.shape == (256, 128) and e_new.shape == (384, 128) and h_new.shape == (128, 384)
  assert not e_old[224:].any() and not e_new[320:].any() and not h_new[:, 320:].any()
  np.testing.assert_array_equal(e_new[:224], e_old[:224])
  np.testing.assert_array_equal(h_new[:, :224], h_old[:, :224])
  # New rows: N(0, 0.02) from the seed, embedding rows first, then lm_head rows in HF (rows, hidden) order.
  rng = np.random.default_rng(7)
  np.testing.assert_array_equal(e_new[224:320], rng.normal(0, 0.02, (96, 128)).astype(np.float32))
  np.testing.assert_array_equal(h_new[:, 224:320], rng.normal(0, 0.02, (96, 128)).T.astype(np.float32))
  fresh = np.concatenate([e_new[224:320].ravel(), h_new[:, 224:320].ravel()])
  assert abs(fresh.std() - 0.02) < 0.002 and abs(fresh.mean()) < 0.002
  np.testing.assert_array_equal(np.asarray(new.layers.mlp.up_proj.kernel.get_value()),
                                np.asarray(old.layers.mlp.up_proj.kernel.get_value()))


def test_cli_all_subcommands(tmp_path, bf16_hf_dir):
  run = run_tool("convert_checkpoint", "hf-to-orbax", bf16_hf_dir, tmp_path / "ck", "--config=configs/tiny.py",
                 "--dtype=float32", "--mesh=1,-1,1", "--cpu_devices=8")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "carried through 1 extra Omni tensors" in run.stdout and "audio projector 4 -> 128" in run.stdout
  run = run_tool("convert_checkpoint", "orbax-to-hf", tmp_path / "ck", tmp_path / "hf", "--max_shard_size=200KB")
  assert run.returncode == 0, run.stderr[-3000:]
  exported = safetensors_io.HFCheckpoint(tmp_path / "hf").read_all()
  source = safetensors_io.HFCheckpoint(bf16_hf_dir).read_all()
  for key, value in source.items():  # bf16 -> fp32 -> stored fp32: exact
    np.testing.assert_array_equal(exported[key], value.astype(np.float32))
  run = run_tool("convert_checkpoint", "expand-vocab", tmp_path / "ck", tmp_path / "big")
  assert run.returncode == 1 and "text vocabulary differs" in run.stderr
  run = run_tool("convert_checkpoint", "orbax-to-hf", tmp_path / "ck", tmp_path / "hf")
  assert run.returncode == 1 and "already exists" in run.stderr
  run = run_tool("convert_checkpoint", "hf-to-orbax", tmp_path / "ck")
  assert run.returncode == 1 and "hf-to-orbax takes HF_DIR OUT" in run.stderr
  assert orbax_io.read_config(tmp_path / "ck").model.dtype == "float32"


def test_chunked_block_reads_match_the_name_map(hf_dir, reference):
  """Blocks (as a device shard asks for them) read in small row chunks equal the full tensors' slices."""
  from omnidiff_jax.checkpoints.safetensors_io import HFCheckpoint
  ckpt = HFCheckpoint(hf_dir)
  weights = torch_reference.state_dict_numpy(reference)
  for name in hf_names.backbone_names():
    want = hf_names.to_ours(name, weights.__getitem__, 2)
    block = tuple(slice(n // 4, n // 2 + 1) for n in want.shape)
    got = convert._read_block(ckpt, name, block, 2, np.dtype(np.float32), chunk_bytes=700)
    np.testing.assert_array_equal(got, want[block])


_WRITE_PEAK = """
import sys, numpy as np, ml_dtypes
from omnidiff_jax.checkpoints import orbax_io
status = lambda key: int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1]) * 1024
before = status('VmRSS')
array = np.ones((6144, 32768), ml_dtypes.bfloat16)  # 384 MiB
orbax_io.write(sys.argv[1], iter([(('params', 'w'), array)]), dict(format=orbax_io.FORMAT))
print('RATIO', (status('VmHWM') - before) / array.nbytes)
"""


def test_streamed_write_holds_no_extra_copy(tmp_path):
  """Peak RSS of writing one array: the array + TensorStore's chunk buffers (measured 2.02x the array). Orbax's
  default defensive copy of host arrays made it 3.00-3.02x (bench/RESULTS.md, checkpoint conversion)."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(sys.path))
  out = subprocess.run([sys.executable, "-c", _WRITE_PEAK, str(tmp_path / "ck" / "0")], env=env, capture_output=True,
                       text=True, check=True)
  ratio = float(out.stdout.split("RATIO")[-1])
  assert ratio < 2.5, out.stdout
