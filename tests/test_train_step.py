"""The sharded train step, optimizer, frozen subtrees, NaN guard and checkpoint restore (in process)."""
import json
import logging

import jax
import numpy as np
import optax
import pytest

from configs import stage1
from omnidiff_jax import sharding
from omnidiff_jax.data import synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import checkpointing, loop, train_step


def _cfg(**train):
  cfg = stage1.get_config("tiny")
  cfg.train.seq_len, cfg.data.max_len = 48, 8
  cfg.train.update(train)
  cfg.metrics.tensorboard = False
  return cfg


def _mesh(cfg, data, fsdp, tensor, devices=None):
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = data, fsdp, tensor
  return sharding.make_mesh(cfg.mesh, devices)


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _run(trainer, state, source, mesh, cfg, steps):
  losses = []
  for _ in range(steps):
    state, m = trainer.step(state, batchlib.global_batch(mesh, next(source), cfg.train.global_rows))
    losses.append(float(m["loss"]))
  return state, losses


def test_tiny_model_learns_frozen_embedding_stays_and_accumulation_matches():
  cfg = _cfg(steps=30)
  cfg.optimizer.frozen = ["^embed_tokens/"]
  mesh = _mesh(cfg, 2, 2, 2)
  trainer = train_step.make_trainer(cfg, mesh)
  state = trainer.init()
  assert state["params"]["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec == jax.P(None, "fsdp", "tensor")
  before = _host(state)

  # With grad_accum_reduction 'mean', two micro-batches of 4 rows give the same steps as one batch of 8 (same
  # masks: drawn per global row). Updates 0 and 1 have learning rate 0 (DeepSpeed's schedule): 4 steps.
  accum_cfg = _cfg(steps=30, grad_accum_steps=2)
  accum_cfg.optimizer.frozen = cfg.optimizer.frozen
  accum_cfg.optimizer.grad_accum_reduction = "mean"
  accum_trainer = train_step.make_trainer(accum_cfg, mesh)
  accum_state = jax.device_put(before, trainer.shardings)
  accum_state, accum_losses = _run(accum_trainer, accum_state, synthetic.make_source(cfg), mesh, cfg, 4)

  state, losses = _run(trainer, state, synthetic.make_source(cfg), mesh, cfg, 30)
  np.testing.assert_allclose(accum_losses, losses[:4], rtol=3e-5)  # measured 6.1e-6 (bf16 compute, summation order)
  assert np.mean(losses[-5:]) < losses[0] - 1.0, losses
  after = _host(state["params"])
  np.testing.assert_array_equal(after["embed_tokens"]["embedding"], before["params"]["embed_tokens"]["embedding"])
  assert np.abs(after["lm_head"]["kernel"] - before["params"]["lm_head"]["kernel"]).max() > 1e-3
  # The frozen subtree has no Adam moments.
  adam_mu = state["opt_state"].inner_state.inner_states["trained"].inner_state[1][0].mu
  assert isinstance(adam_mu["embed_tokens"]["embedding"], optax.MaskedNode)


def test_frozen_pattern_must_match():
  cfg = _cfg()
  cfg.optimizer.frozen = ["sensevoice_encoder/"]
  with pytest.raises(ValueError, match="sensevoice_encoder"):
    train_step.make_trainer(cfg, _mesh(cfg, 1, 8, 1))


def test_nonfinite_updates_are_skipped_then_training_stops(tmp_path, monkeypatch):
  cfg = _cfg(steps=12)
  cfg.optimizer.max_nonfinite_steps = 3
  cfg.checkpoint.save_every = 2
  _mesh(cfg, 1, 8, 1)
  poison_from = 5  # batches 5.. carry an id outside the vocabulary: NaN embeddings, NaN loss and gradients

  def poison(index, batch):
    if index + 1 >= poison_from:
      batch = dict(batch, input_ids=batch["input_ids"].copy())
      batch["input_ids"][:, 0] = cfg.vocab.size + 7
    return batch

  def poisoned_source(cfg):
    return synthetic.to_iterator(synthetic.make_dataset(cfg).map_with_index(poison))

  monkeypatch.setattr(loop, "make_data_source", poisoned_source)
  with pytest.raises(loop.NonFiniteError, match="3 non-finite updates in a row"):
    loop.train(cfg, str(tmp_path))
  records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["skipped_steps"] for r in records] == [0, 0, 0, 0, 1, 2, 3]
  assert all(np.isfinite(r["loss"]) for r in records[:4]) and not np.isfinite(records[-1]["loss"])
  # The state after the skipped steps equals the last good one (step 4).
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), cfg.checkpoint)
  state6, step = ckpt.restore_latest(trainer.abstract_state, synthetic.make_source(cfg))
  ckpt.manager.wait_until_finished()
  state4 = ckpt.manager.restore(4, args=checkpointing.ocp.args.Composite(
      state=checkpointing.ocp.args.StandardRestore(trainer.abstract_state)))["state"]
  ckpt.close()
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, _host(state6["params"]), _host(state4["params"]))


def test_restore_onto_another_mesh_and_fall_back_from_a_corrupt_checkpoint(tmp_path, caplog):
  cfg = _cfg(steps=10)
  cfg.checkpoint.async_save = True
  mesh8 = _mesh(cfg, 2, 2, 2)
  trainer8 = train_step.make_trainer(cfg, mesh8)
  source = synthetic.make_source(cfg)
  ckpt = checkpointing.Checkpointer(str(tmp_path), cfg.checkpoint)
  state, _ = _run(trainer8, trainer8.init(), source, mesh8, cfg, 2)
  saved = _host(state)
  ckpt.save(2, state, source, {"step": 2}, force=True)
  ckpt.wait()
  state, losses8 = _run(trainer8, state, source, mesh8, cfg, 1)
  ckpt.save(3, state, source, {"step": 3}, force=True)
  ckpt.wait()
  ckpt.close()
  for f in (tmp_path / "3" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")

  mesh4 = _mesh(cfg, 1, 4, 1, devices=jax.devices()[:4])
  trainer4 = train_step.make_trainer(cfg, mesh4)
  source4 = synthetic.make_source(cfg)
  ckpt = checkpointing.Checkpointer(str(tmp_path), cfg.checkpoint)
  with caplog.at_level(logging.WARNING):
    restored, step = ckpt.restore_latest(trainer4.abstract_state, source4)
  ckpt.close()
  assert step == 2 and "unreadable" in caplog.text and (tmp_path / "3.unreadable").is_dir()
  assert restored["params"]["lm_head"]["kernel"].sharding.mesh.shape == mesh4.shape
  jax.tree.map(np.testing.assert_array_equal, _host(restored), saved)
  assert source4.get_state() == {"next_index": 2}
  # Step 3 on the 4-device mesh from the restored state gives the loss step 3 had on the 8-device mesh, up to
  # the bf16 compute's different reduction order on the other mesh (measured relative difference 5.2e-5).
  _, losses4 = _run(trainer4, restored, source4, mesh4, cfg, 1)
  np.testing.assert_allclose(losses4, losses8, rtol=5e-4)


def test_unreadable_checkpoints_with_nothing_to_fall_back_to_raise(tmp_path):
  cfg = _cfg()
  mesh = _mesh(cfg, 1, 8, 1)
  abstract = train_step.make_trainer(cfg, mesh).abstract_state
  ckpt = checkpointing.Checkpointer(str(tmp_path), cfg.checkpoint)
  # A checkpoint written by a different model (a config mismatch) cannot be restored into this one.
  ckpt.save(1, {"params": {"w": np.zeros(3, np.float32)}}, synthetic.make_source(cfg), {}, force=True)
  ckpt.wait()
  with pytest.raises(RuntimeError, match="no earlier one to fall back to"):
    ckpt.restore_latest(abstract, synthetic.make_source(cfg))
  ckpt.close()


def test_batch_contract_with_user_speech():
  rows, seq, feature_rows, feature_dim = 2, 8, 3, 4
  batch = {name: np.zeros((rows, seq), np.int32) for name in batchlib.FIELDS}
  batch["labels"][:] = batchlib.IGNORE_ID
  batch["labels"][:, 5:] = 7  # the answer
  slots = np.zeros((rows, seq), np.int32)
  slots[0, 1:4] = 1
  speech = dict(batch, audio_slots=slots, audio_features=np.zeros((rows, feature_rows, feature_dim), np.float32))
  check = lambda b, **kw: batchlib.check_local_batch(b, rows, seq, **kw)
  sizes = dict(num_feature_rows=feature_rows, feature_dim=feature_dim)
  check(speech, **sizes)
  check(batch)  # no speech configured, none carried
  with pytest.raises(ValueError, match="'audio_slots' marks user-speech slots, but data.feature_rows is 0"):
    check(speech)
  with pytest.raises(ValueError, match=r"lacks fields \['audio_slots', 'audio_features'\]"):
    check(batch, **sizes)
  with pytest.raises(ValueError, match=r"'audio_features': expected float array of shape \(2, 3, 4\)"):
    check(dict(speech, audio_features=np.zeros((rows, feature_rows, 5), np.float32)), **sizes)
  too_many = slots.copy()
  too_many[1, :4] = 1
  with pytest.raises(ValueError, match="'audio_slots': row 1 has 4 slots, more than data.feature_rows=3"):
    check(dict(speech, audio_slots=too_many), **sizes)
  on_target = slots.copy()
  on_target[1, 6] = 1
  with pytest.raises(ValueError, match="'audio_slots': a user-speech slot is a target"):
    check(dict(speech, audio_slots=on_target), **sizes)
