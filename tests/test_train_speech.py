"""User speech in training: projected SenseVoice features spliced into the audio slots, the projector trained,
the no-speech path unchanged, and a tiny run on a mixture source whose rows carry feature slots."""
import jax
import numpy as np
import pytest
from flax import nnx

from configs import stage1
from omnidiff_jax import sharding
from omnidiff_jax.data import synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import loss as losslib, train_step
from omnidiff_jax.vocab import VocabLayout

FEATURE_ROWS = 8
PROJECTOR = "audio_projection"


def _cfg(feature_rows=FEATURE_ROWS):
  cfg = stage1.get_config("tiny")
  cfg.train.seq_len, cfg.data.max_len = 48, 8
  cfg.data.feature_rows = feature_rows
  cfg.metrics.tensorboard = False
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 4, 1
  return cfg


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _leaves(tree) -> dict:
  """{key path: array} of a nested dict."""
  return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_all_changed(after, before):
  after = _leaves(after)
  for path, value in _leaves(before).items():
    assert np.abs(after[path] - value).max() > 1e-5, path


def _with_speech(batch, cfg, seed=0):
  """Turns up to FEATURE_ROWS prompt tokens of every row into <|context_of_audio|> slots with random features."""
  rng = np.random.default_rng(seed)
  audio_id = VocabLayout.from_config(cfg.vocab).special_id("<|context_of_audio|>")
  rows, seq_len = batch["input_ids"].shape
  slots = np.zeros((rows, seq_len), np.int32)
  for r in range(rows):
    prompt = np.flatnonzero((batch["labels"][r] == batchlib.IGNORE_ID) & (batch["segment_ids"][r] > 0))
    slots[r, rng.choice(prompt[3:], size=min(len(prompt) - 3, FEATURE_ROWS - r % 3), replace=False)] = 1
  features = rng.normal(0, 1, (rows, FEATURE_ROWS, cfg.data.feature_dim)).astype(np.float32)
  return dict(batch, input_ids=np.where(slots == 1, audio_id, batch["input_ids"]).astype(np.int32),
              audio_slots=slots, audio_features=features)


def test_corruption_never_masks_audio_slots():
  cfg = _cfg()
  batch = _with_speech(next(synthetic.make_source(cfg)), cfg)
  cfg.loss.eps = 1.0  # noise level 1: every ordinary target is masked
  vocab = VocabLayout.from_config(cfg.vocab)
  noise = losslib.corrupt(jax.random.key(3), batch, np.arange(8), mask_id=vocab.mask_id, eos_id=vocab.eos_id,
                          loss_cfg=cfg.loss)
  masked, slots = np.asarray(noise.masked), batch["audio_slots"] == 1
  ordinary = (batch["labels"] != batchlib.IGNORE_ID) & (batch["labels"] != vocab.eos_id)
  assert slots.sum() >= 30 and masked[ordinary].all()
  assert not masked[slots].any()
  np.testing.assert_array_equal(np.asarray(noise.noisy_ids)[slots], vocab.special_id("<|context_of_audio|>"))


def test_speech_loss_matches_a_numpy_splice_and_trains_the_projector():
  cfg = _cfg()
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  assert trainer.fields == batchlib.FIELDS + batchlib.AUDIO_FIELDS
  state = trainer.init()
  params = _host(state["params"])
  assert params[PROJECTOR]["linear_1"]["kernel"].shape == (32, 128)
  assert state["params"][PROJECTOR]["linear_1"]["kernel"].sharding.spec == jax.P()  # small: replicated
  local = _with_speech(next(synthetic.make_source(cfg)), cfg)
  batchlib.check_local_batch(local, 8, cfg.train.seq_len, num_feature_rows=FEATURE_ROWS, feature_dim=32)

  # Reference: the same model, the projected features written into the slots with NumPy.
  key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 0)
  vocab = VocabLayout.from_config(cfg.vocab)
  noise = losslib.corrupt(key, local, np.arange(8), mask_id=vocab.mask_id, eos_id=vocab.eos_id, loss_cfg=cfg.loss)
  model = nnx.merge(trainer.graphdef, params)
  embeds = np.array(model.embed(noise.noisy_ids))
  projected = np.asarray(model.audio_projection(local["audio_features"]))
  for r in range(8):
    positions = np.flatnonzero(local["audio_slots"][r])
    embeds[r, positions] = projected[r, :len(positions)]
  logits = model(inputs_embeds=embeds, positions=local["positions"], segment_ids=local["segment_ids"])
  terms = losslib.diffusion_loss(logits, local["labels"], noise.masked, noise.t, local["task_ids"],
                                 num_tasks=len(batchlib.TASKS), loss_cfg=cfg.loss)
  reference = float(terms.numerator / terms.denominator)

  # The sharded, jitted train step computes the same loss.
  batch = batchlib.global_batch(mesh, local, 8, trainer.fields)
  state, metrics = trainer.step(state, batch)
  np.testing.assert_allclose(float(metrics["loss"]), reference, rtol=1e-5)
  # Adam's first moment after one step is 0.1 x the (clipped) gradient: nonzero for every projector parameter.
  adam = state["opt_state"].inner_state.inner_states["trained"].inner_state[1][0]
  for path, grad in _leaves(_host(adam.mu[PROJECTOR])).items():
    assert np.abs(grad).max() > 1e-7, path
  state, _ = trainer.step(state, batch)  # the learning rate warms up from 0 at the first step
  _assert_all_changed(_host(state["params"][PROJECTOR]), params[PROJECTOR])


def test_without_speech_the_projector_changes_nothing():
  """Synthetic rows (no speech): bit-identical losses and backbone to a model without a projector."""
  losses, params, initial = {}, {}, {}
  for name in ("with", "without"):
    cfg = _cfg(feature_rows=0)
    cfg.train.steps = 3
    if name == "without":
      cfg.model.audio_projector = None
    cfg.mesh.data, cfg.mesh.fsdp = 1, 1  # one device compiles faster; the mesh is not what this test is about
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
    trainer = train_step.make_trainer(cfg, mesh)
    assert trainer.fields == batchlib.FIELDS
    state, source = trainer.init(), synthetic.make_source(cfg)
    initial[name] = _host(state["params"])
    losses[name] = []
    for _ in range(3):
      state, metrics = trainer.step(state, batchlib.global_batch(mesh, next(source), 8))
      losses[name].append(float(metrics["loss"]))
    params[name] = _host(state["params"])
  assert losses["with"] == losses["without"], losses
  projector = params["with"].pop(PROJECTOR)
  jax.tree.map(np.testing.assert_array_equal, params["with"], params["without"])
  jax.tree.map(np.testing.assert_array_equal, projector, initial["with"][PROJECTOR])  # no gradient: unchanged


def test_speech_needs_a_matching_projector():
  cfg = _cfg()
  cfg.data.feature_dim = 16
  with pytest.raises(ValueError, match="audio_projector.input_size=32 must equal data.feature_dim=16"):
    train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh))
  cfg.model.audio_projector = None
  with pytest.raises(ValueError, match="needs model.audio_projector"):
    train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh))

