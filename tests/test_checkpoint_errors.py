"""Bad HF input is rejected with one error listing every problem; interrupted conversions never look complete."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

torch_reference = pytest.importorskip("torch_reference")

from omnidiff_jax.checkpoints import CheckpointError, convert, load, orbax_io  # noqa: E402
from omnidiff_jax.checkpoints.safetensors_io import HFCheckpoint  # noqa: E402


def _tiny():
  from configs import tiny
  return tiny.get_config()


@pytest.fixture(scope="module")
def reference():
  return torch_reference.random_qwen2(_tiny().model, seed=0)


def _single_file_dir(path, tensors, config):
  path.mkdir(parents=True)
  save_file(tensors, str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps(config))
  return path


def _problems(excinfo):
  return "\n".join(excinfo.value.problems)


def test_sharded_dir_with_missing_and_truncated_shards(tmp_path, reference):
  hf = tmp_path / "hf"
  reference.save_pretrained(hf, max_shard_size="300KB")
  shards = sorted(hf.glob("model-*.safetensors"))
  assert len(shards) >= 3
  shards[0].unlink()
  data = shards[1].read_bytes()
  shards[1].write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError) as excinfo:
    convert.hf_to_orbax(hf, tmp_path / "out", config=_tiny(), progress=False)
  text = _problems(excinfo)
  assert f"{shards[0]}: missing shard" in text
  assert f"{shards[1]}: unreadable or truncated" in text
  assert "missing tensor" in text  # the tensors of both shards are reported too
  assert not (tmp_path / "out").exists()


def test_every_tensor_problem_is_listed(tmp_path, reference):
  tensors = torch_reference.state_dict_numpy(reference)
  del tensors["model.norm.weight"]                                            # missing
  tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"][:, :64]
  tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"].astype(np.int32)
  tensors["model.vision_tower.weight"] = np.zeros(3, np.float32)             # unexpected
  hf = _single_file_dir(tmp_path / "hf", tensors, reference.config.to_dict())
  cfg = _tiny()
  cfg.vocab.size = 300  # does not match config.json's vocab_size 320
  with pytest.raises(CheckpointError) as excinfo:
    convert.hf_to_orbax(hf, tmp_path / "out", config=cfg, progress=False)
  problems = excinfo.value.problems
  text = "\n".join(problems)
  assert "missing tensor 'model.norm.weight' (expected shape [128])" in text
  assert "model.layers.0.self_attn.q_proj.weight: shape [128, 64], expected [128, 128]" in text
  assert "model.layers.1.mlp.up_proj.weight: dtype I32" in text
  assert "unexpected tensor 'model.vision_tower.weight'" in text
  assert "vocabulary mismatch: the vocab layout has 300 rows, config.json has vocab_size 320" in text
  assert len(problems) == 5
  assert str(excinfo.value).count("\n") == 5  # one line per problem after the header
  assert not (tmp_path / "out").exists()


def test_config_problems(tmp_path, reference):
  tensors = torch_reference.state_dict_numpy(reference)
  config = reference.config.to_dict()
  del config["intermediate_size"]
  hf = _single_file_dir(tmp_path / "a", tensors, config)
  with pytest.raises(CheckpointError, match=r"missing field\(s\) \['intermediate_size'\]"):
    convert.hf_to_orbax(hf, tmp_path / "out", progress=False)
  hf = _single_file_dir(tmp_path / "b", tensors, reference.config.to_dict())
  with pytest.raises(CheckpointError, match="vocab_size 320 is neither Dream"):
    convert.hf_to_orbax(hf, tmp_path / "out", progress=False)
  (hf / "config.json").unlink()
  with pytest.raises(CheckpointError, match="config.json: missing"):
    convert.hf_to_orbax(hf, tmp_path / "out", progress=False)
  cfg = _tiny()
  cfg.model.num_layers = 3
  hf = _single_file_dir(tmp_path / "c", tensors, reference.config.to_dict())
  with pytest.raises(CheckpointError, match="num_hidden_layers=2 but the given config has model.num_layers=3"):
    convert.hf_to_orbax(hf, tmp_path / "out", config=cfg, progress=False)


def test_interrupted_conversion_never_loads_as_complete(tmp_path, reference, monkeypatch):
  hf = tmp_path / "hf"
  reference.save_pretrained(hf)
  real_read, calls = HFCheckpoint.read, []

  def failing_read(self, key, index=None):
    calls.append(key)
    if len(calls) > 10:
      raise KeyboardInterrupt  # as if the user hit Ctrl-C half way
    return real_read(self, key, index)

  out = tmp_path / "ck"
  monkeypatch.setattr(HFCheckpoint, "read", failing_read)
  with pytest.raises(KeyboardInterrupt):
    convert.hf_to_orbax(hf, out, config=_tiny(), progress=False)
  assert not (out / "0").exists() and not (out / "0.partial_save").exists()
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    load(out)

  # A hard kill skips the clean-up: the partial directory stays, and still does not load.
  calls.clear()
  monkeypatch.setattr(orbax_io.shutil, "rmtree", lambda *a, **k: None)
  with pytest.raises(KeyboardInterrupt):
    convert.hf_to_orbax(hf, out, config=_tiny(), progress=False)
  assert (out / "0.partial_save").exists() and not (out / "0").exists()
  with pytest.raises(FileNotFoundError, match="interrupted conversion"):
    load(out)

  monkeypatch.undo()  # rerunning replaces the stale partial directory and completes
  convert.hf_to_orbax(hf, out, config=_tiny(), progress=False)
  model, _ = load(out)
  np.testing.assert_array_equal(np.asarray(model.norm.weight.get_value()),
                                reference.model.norm.weight.detach().numpy())


def test_interrupted_export_leaves_no_output(tmp_path, reference, monkeypatch):
  hf = tmp_path / "hf"
  reference.save_pretrained(hf)
  convert.hf_to_orbax(hf, tmp_path / "ck", config=_tiny(), progress=False)
  real_restore, calls = orbax_io.restore, []

  def failing_restore(path, target):
    calls.append(1)
    if len(calls) > 3:
      raise KeyboardInterrupt
    return real_restore(path, target)

  monkeypatch.setattr(orbax_io, "restore", failing_restore)
  with pytest.raises(KeyboardInterrupt):
    convert.orbax_to_hf(tmp_path / "ck", tmp_path / "export", max_shard_size="50KB", progress=False)
  assert not (tmp_path / "export").exists()
  monkeypatch.undo()
  convert.orbax_to_hf(tmp_path / "ck", tmp_path / "export", progress=False)
  assert (tmp_path / "export" / "model.safetensors.index.json").is_file()
