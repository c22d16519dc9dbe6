"""User speech in training: projected SenseVoice features spliced into the audio slots, the projector trained,
the no-speech path unchanged, and a tiny run on a mixture source whose rows carry feature slots."""
import json

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import stage1
from omnidiff_jax import checkpoints, sharding
from omnidiff_jax import config as cfglib
from omnidiff_jax.data import records, synthetic
from omnidiff_jax.training import batch as batchlib
from omnidiff_jax.training import checkpointing, loop, loss as losslib, optimizer as optlib, train_step
from omnidiff_jax.vocab import VocabLayout

FEATURE_ROWS = 8
PROJECTOR = "audio_projection"


def _cfg(feature_rows=FEATURE_ROWS):
  cfg = stage1.get_config("tiny")
  cfg.train.seq_len, cfg.data.max_len = 48, 8
  cfg.data.feature_rows = feature_rows
  cfg.metrics.tensorboard = False
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 4, 1
  # fp32 compute (the stage configs use bf16): the sharded step's loss is compared with an unsharded
  # reference at rtol 1e-5.
  cfg.model.dtype = cfg.model.audio_projector.dtype = "float32"
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
  for _ in range(2):  # DeepSpeed's schedule gives updates 0 and 1 learning rate 0
    state, _ = trainer.step(state, batch)
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


def test_frozen_patterns_reach_the_projector():
  cfg = _cfg()
  cfg.optimizer.frozen = ["^audio_projection/"]
  trainer = train_step.make_trainer(cfg, sharding.make_mesh(cfg.mesh))
  frozen = {path for path, f in _leaves(optlib.frozen_mask(trainer.abstract_state["params"], cfg.optimizer.frozen))
            .items() if f}
  assert frozen == {(PROJECTOR, "pre_proj_layernorm", "scale"), (PROJECTOR, "pre_proj_layernorm", "bias"),
                    (PROJECTOR, "linear_1", "kernel"), (PROJECTOR, "linear_2", "kernel")}
  adam = trainer.abstract_state["opt_state"].inner_state.inner_states["trained"].inner_state[1][0]
  assert isinstance(adam.mu[PROJECTOR]["linear_1"]["kernel"], optax.MaskedNode)  # no optimizer state
  assert adam.mu["lm_head"]["kernel"].shape == (128, cfglib.padded_vocab_size(cfg.model))


def write_speech_source(directory, cfg, count=24, seed=0):
  """An ArrayRecord source of ASR-shaped tokenized samples: user turn with 3-6 feature slots, text answer."""
  rng = np.random.default_rng(seed)
  vocab = VocabLayout.from_config(cfg.vocab)
  audio_id = vocab.special_id("<|context_of_audio|>")
  samples = []
  for _ in range(count):
    num_slots, answer = int(rng.integers(3, 7)), rng.integers(10, 150, int(rng.integers(3, 8)))
    prompt = [vocab.im_start_id, 1, 3, *[audio_id] * num_slots, vocab.im_end_id, 3, vocab.im_start_id, 2, 3]
    ids = np.array(prompt + [*answer, vocab.im_end_id, 3], np.int32)
    labels = np.where(np.arange(len(ids)) >= len(prompt), ids, batchlib.IGNORE_ID).astype(np.int32)
    samples.append(dict(input_ids=ids, labels=labels, task_id=np.int32(batchlib.TASKS.index("asr")),
                        feature_slots=np.arange(3, 3 + num_slots, dtype=np.int32),
                        audio_features=rng.normal(0, 1, (num_slots, cfg.data.feature_dim)).astype(np.float32)))
  directory.mkdir()
  records.write_shard(records.shard_path(str(directory), "data", 0), samples)
  return str(directory)


def speech_mixture_cfg(tmp_path, steps):
  """Tiny stage-1 model on the 'mixture' pipeline over one ArrayRecord source with user speech."""
  cfg = _cfg()
  cfg.train.steps, cfg.train.global_rows = steps, 8
  cfg.optimizer.warmup_steps = 1
  cfg.checkpoint.async_save = False
  path = write_speech_source(tmp_path / "asr", cfg)
  cfg.data = ml_collections.ConfigDict(dict(
      source="mixture", seed=0, on_error="skip", num_packing_bins=1, tail_pad_max=16, feature_rows=FEATURE_ROWS,
      feature_dim=cfg.data.feature_dim, read_threads=1, prefetch=0,
      sources=dict(asr=dict(kind="array_record", path=path, weight=1.0, split="", data_dir="", adapter=""))))
  return cfg


def test_tiny_run_on_a_speech_mixture_trains_the_projector_and_loads_as_a_model(tmp_path):
  cfg = speech_mixture_cfg(tmp_path, steps=8)  # DeepSpeed's schedule: updates 0 and 1 have learning rate 0
  workdir = tmp_path / "run"
  result = loop.train(cfg, str(workdir))
  assert result["step"] == 8 and np.isfinite(result["loss"])
  losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert losses[-1] < losses[0] - 1.0, losses
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  initial = _host(trainer.init()["params"])
  model, stored_cfg = checkpoints.load(workdir / "checkpoints")
  assert stored_cfg.model.audio_projector.input_size == cfg.data.feature_dim
  _assert_all_changed(_host(nnx.to_pure_dict(nnx.state(model.audio_projection, nnx.Param))), initial[PROJECTOR])
  # The loaded model is the trained state: same logits as the parameters the resume path restores.
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"), cfg.checkpoint)
  restored, step = ckpt.restore_latest(trainer.abstract_state, loop.make_data_source(cfg))
  ckpt.close()
  assert step == 8
  ids = np.random.default_rng(1).integers(0, cfg.vocab.size, (2, 16)).astype(np.int32)
  trained_logits = nnx.merge(trainer.graphdef, restored["params"])(ids)
  np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(trained_logits), rtol=1e-6, atol=1e-6)

