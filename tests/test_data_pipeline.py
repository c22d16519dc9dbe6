"""Grain pipeline: ArrayRecord sources, tail pad, packing, sharding, mixtures, determinism and resume."""
import json

import grain
import ml_collections
import numpy as np
import pytest
import soundfile

from omnidiff_jax.data import packing, pipeline, records, stages
from omnidiff_jax.data.encode import SampleEncoder
from omnidiff_jax.data.interfaces import IGNORE_ID, TASKS
from omnidiff_jax.vocab import VocabLayout
from tests.fixtures.data.fakes import FakeMediaTokenizer, text_tokenizer_and_layout

SEQ_LEN = 64
FEATURE_DIM = 4


@pytest.fixture
def vocab():
  return text_tokenizer_and_layout()[1]


def _sample(tag: int, index: int, rng: np.random.Generator, eos_id: int, *, features: bool, length=None):
  """A tokenized sample whose first two ids identify it: (tag, index). Half of them already end in eos."""
  length = length or int(rng.integers(6, 30))
  ids = rng.integers(1, 150, length).astype(np.int32)
  ids[0], ids[1] = tag, index
  if index % 2:
    ids[-1] = eos_id
  labels = np.full(length, IGNORE_ID, np.int32)
  answer = max(length // 2, 5)  # after the feature slots 2..4 (user turn: never targets)
  labels[answer:] = ids[answer:]
  slots = np.arange(2, 2 + (3 if features else 0), dtype=np.int32)
  feats = (np.arange(len(slots) * FEATURE_DIM, dtype=np.float32).reshape(-1, FEATURE_DIM) + 1000 * tag + index)
  return {"input_ids": ids, "labels": labels, "task_id": np.int32(tag % len(TASKS)), "feature_slots": slots,
          "audio_features": feats.astype(np.float32)}


def _write_source(tmp_path, name, tag, n, eos_id, features=False, overlong=()):
  rng = np.random.default_rng(tag)
  samples = [_sample(tag, i, rng, eos_id, features=features, length=SEQ_LEN + 5 if i in overlong else None)
             for i in range(n)]
  out = tmp_path / name
  out.mkdir()
  records.write_shard(records.shard_path(str(out), "data", 0), samples[: n // 2])
  records.write_shard(records.shard_path(str(out), "data", 1), samples[n // 2:])
  return str(out), samples


def _data_cfg(sources, **kw):
  cfg = dict(source="mixture", seed=0, on_error="skip", num_packing_bins=1, tail_pad_max=16, feature_rows=0,
             feature_dim=FEATURE_DIM, read_threads=1, prefetch=0,
             sources={n: dict(kind="array_record", path=p, weight=w, split="", data_dir="", adapter="")
                      for n, (p, w) in sources.items()})
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


def _segments(batch):
  """(tag, index, ids, labels, positions, task) of every packed sample of every row."""
  out = []
  for r in range(batch["input_ids"].shape[0]):
    seg = batch["segment_ids"][r]
    for s in range(1, seg.max() + 1):
      span = seg == s
      ids = batch["input_ids"][r][span]
      out.append((int(ids[0]), int(ids[1]), ids, batch["labels"][r][span], batch["positions"][r][span],
                  batch["task_ids"][r][span]))
  return out


def test_packed_rows_follow_the_contract(tmp_path, vocab):
  path, samples = _write_source(tmp_path, "a", 7, 40, vocab.eos_id, overlong=(3, 11))
  pipe = pipeline.build(_data_cfg({"a": (path, 1.0)}), vocab, seq_len=SEQ_LEN, local_rows=4)
  batches = [b for _, b in zip(range(6), pipe.dataset)]
  for b in batches:
    assert set(b) == {"input_ids", "labels", "positions", "segment_ids", "task_ids"}
    assert all(v.shape == (4, SEQ_LEN) and v.dtype == np.int32 for v in b.values())
    pad = b["segment_ids"] == 0
    assert (b["input_ids"][pad] == vocab.eos_id).all() and (b["labels"][pad] == IGNORE_ID).all()
    for r in range(4):  # padding positions continue the last sample's positions (upstream)
      used = int((~pad[r]).sum())
      np.testing.assert_array_equal(np.diff(b["positions"][r][used - 1:]), 1)
  seen = set()
  for tag, index, ids, labels, positions, task in _segments({k: np.concatenate([b[k] for b in batches]) for k in
                                                           batches[0]}):
    src = samples[index]
    n = len(src["input_ids"])
    assert tag == 7 and index not in (3, 11)
    np.testing.assert_array_equal(ids[:n], src["input_ids"])
    np.testing.assert_array_equal(labels[:n], src["labels"])
    np.testing.assert_array_equal(positions, np.arange(len(ids)))
    assert (task == 7).all()
    tail = len(ids) - n
    if index % 2:  # already had an eos: no tail pad
      assert tail == 0
    else:  # 1..16 eos appended, as targets
      assert 1 <= tail <= 16
      assert (ids[n:] == vocab.eos_id).all() and (labels[n:] == vocab.eos_id).all()
    seen.add(index)
  assert len(seen) == 38  # every record that fits was packed in the first epoch
  assert pipe.overlong["a"].dropped >= 2 and pipe.stats()["overlong_dropped"]["a"] == pipe.overlong["a"].dropped


def test_deterministic_and_resumes_exactly(tmp_path, vocab):
  pa, _ = _write_source(tmp_path, "a", 1, 30, vocab.eos_id)
  pb, _ = _write_source(tmp_path, "b", 2, 30, vocab.eos_id)
  cfg = _data_cfg({"a": (pa, 1.0), "b": (pb, 1.0)}, num_packing_bins=3)

  def batches(it, n):
    return [next(it) for _ in range(n)]

  first = batches(iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset), 8)
  again = batches(iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset), 8)
  for x, y in zip(first, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  cfg.read_threads, cfg.prefetch = 4, 8  # parallel reads keep the order
  threaded = batches(iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset), 8)
  for x, y in zip(first, threaded):
    np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
  cfg.read_threads, cfg.prefetch = 1, 0
  cfg.seed = 1
  other = batches(iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset), 8)
  assert any(not np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(first, other))
  # Resume: state after 3 batches (through JSON, as a checkpoint stores it) restores the rest exactly.
  cfg.seed = 0
  it = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset)
  batches(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  resumed = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset)
  resumed.set_state(state)
  for x, y in zip(first[3:], batches(resumed, 5)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_processes_read_disjoint_records(tmp_path, vocab):
  path, _ = _write_source(tmp_path, "a", 3, 40, vocab.eos_id)
  cfg = _data_cfg({"a": (path, 1.0)})
  seen = []
  for p in range(2):
    it = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2, process_index=p, process_count=2).dataset)
    seen.append({index for _ in range(4) for _, index, *_ in _segments(next(it))})
  assert not seen[0] & seen[1]
  assert seen[0] <= set(range(0, 40, 2)) and seen[1] <= set(range(1, 40, 2))


def test_mixture_weights(tmp_path, vocab):
  pa, _ = _write_source(tmp_path, "a", 1, 50, vocab.eos_id)
  pb, _ = _write_source(tmp_path, "b", 2, 50, vocab.eos_id)
  cfg = _data_cfg({"a": (pa, 3.0), "b": (pb, 1.0)})
  it = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=8).dataset)
  tags = [tag for _ in range(10) for tag, *_ in _segments(next(it))]
  share = tags.count(1) / len(tags)
  assert abs(share - 0.75) < 0.03, share  # grain's mixer interleaves deterministically by weight


def test_feature_rows_follow_their_slots(tmp_path, vocab):
  path, samples = _write_source(tmp_path, "a", 4, 20, vocab.eos_id, features=True)
  cfg = _data_cfg({"a": (path, 1.0)}, feature_rows=10)
  batch = next(iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset))
  assert batch["audio_features"].shape == (2, 10, FEATURE_DIM) and batch["audio_slots"].shape == (2, SEQ_LEN)
  for r in range(2):
    slot_positions = np.flatnonzero(batch["audio_slots"][r])
    assert len(slot_positions) <= 10 and len(slot_positions) % 3 == 0
    for k, pos in enumerate(slot_positions):  # slot k <- feature row k, from the same sample
      seg = batch["segment_ids"][r][pos]
      index = batch["input_ids"][r][batch["segment_ids"][r] == seg][1]
      np.testing.assert_array_equal(batch["audio_features"][r, k], samples[index]["audio_features"][k % 3])
    assert (batch["audio_features"][r, len(slot_positions):] == 0).all()


def test_online_manifest_source_skips_bad_lines(tmp_path, vocab):
  soundfile.write(tmp_path / "a.wav", np.sin(np.arange(8000) / 5.0).astype(np.float32), 16_000)
  good = {"messages": [{"role": "user", "content": "Convert the speech to text.\n<|audio|>"},
                       {"role": "assistant", "content": "hello world"}], "audios": ["a.wav"]}
  lines = [json.dumps(good), "{broken", json.dumps({**good, "audios": ["missing.wav"]}), json.dumps(good)]
  (tmp_path / "m.jsonl").write_text("\n".join(lines))
  cfg = _data_cfg({}, feature_rows=SEQ_LEN, feature_dim=FEATURE_DIM)
  cfg.sources = ml_collections.ConfigDict({"asr": dict(kind="manifest", path=str(tmp_path / "m.jsonl"), weight=1.0,
                                                       split="", data_dir="", adapter="")})
  encoder = SampleEncoder(vocab, text_tokenizer_and_layout()[0], FakeMediaTokenizer(vocab, FEATURE_DIM),
                          feature_dim=FEATURE_DIM)
  pipe = pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=1, encoder=encoder)
  row = next(iter(pipe.dataset))
  assert row["segment_ids"].max() >= 1 and (row["task_ids"][row["segment_ids"] > 0] == TASKS.index("asr")).all()
  assert int(row["audio_slots"].sum()) == 8 * row["segment_ids"].max()  # 0.5 s -> 8 fake 60 ms frames each
  assert pipe.policy.skipped == 2
  assert {e["where"] for e in pipe.policy.examples} == {f"{tmp_path}/m.jsonl:2", f"{tmp_path}/m.jsonl:3"}
  with pytest.raises(ValueError, match="needs a SampleEncoder"):
    pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=1)


def test_tail_pad_is_a_function_of_seed_and_index(vocab):
  sample = {"input_ids": np.array([5, 6, 7], np.int32), "labels": np.array([IGNORE_ID, 6, 7], np.int32)}
  pads = [len(packing.add_tail_pad(sample, np.random.default_rng([0, 0, i]), vocab.eos_id)["input_ids"]) - 3
          for i in range(200)]
  assert min(pads) == 1 and max(pads) == 16
  assert pads == [len(packing.add_tail_pad(sample, np.random.default_rng([0, 0, i]), vocab.eos_id)["input_ids"]) - 3
                  for i in range(200)]


def test_stage_mixtures():
  assert set(stages.stage_mixture(1)) == {"t2i", "caption", "text"}
  assert set(stages.stage_mixture(2)) == {"t2i", "caption", "text", "asr", "tts", "sqa", "vqa"}
  # Table 4 (reference notes section 3.3): every family but captioning in stage 3, at the paper's sizes (K).
  assert stages.stage_mixture(3) == {"text": 670.0, "t2i": 4_000.0, "asr": 390.0, "tts": 1_840.0, "sqa": 430.0,
                                     "vqa": 2_820.0, "svqa": 30.0, "s2i": 30.0}
  assert stages.stage_mixture(1)["caption"] == 10_000.0
  cfg1, cfg3 = stages.data_config(1, "/data"), stages.data_config(3, "/data")
  assert cfg1.feature_rows == 0 and cfg3.feature_rows == 3072
  assert cfg3.sources.svqa.path == "/data/svqa" and cfg3.sources.svqa.kind == "array_record"
  with pytest.raises(ValueError, match="stage must be one of"):
    stages.stage_mixture(4)


def test_pad_attention_switch():
  """'upstream': the trailing padding joins the last sample's segment (upstream lets it attend to the pad keys);
  'masked' (default): segment 0. Positions continue the last sample's in both; labels stay -100."""
  row = {"input_ids": np.arange(8, dtype=np.int32), "labels": np.full(8, IGNORE_ID, np.int32),
         "task_ids": np.ones(8, np.int32), "input_ids_segment_ids": np.array([1, 1, 1, 2, 2, 0, 0, 0], np.int32),
         "input_ids_positions": np.array([0, 1, 2, 0, 1, 0, 0, 0], np.int32)}
  masked, upstream = packing._finish_row(row), packing._finish_row(row, pad_attention="upstream")
  assert masked["segment_ids"].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
  assert upstream["segment_ids"].tolist() == [1, 1, 1, 2, 2, 2, 2, 2]
  assert masked["positions"].tolist() == upstream["positions"].tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
  assert stages.data_config(3, "/data").pad_attention == "masked"
  with pytest.raises(ValueError, match="data.pad_attention"):
    packing.pack(grain.MapDataset.range(1).to_iter_dataset(), seq_len=8, eos_id=0, pad_attention="both")


def test_rows_pass_the_training_batch_contract(tmp_path, vocab):
  contract = pytest.importorskip("omnidiff_jax.training.batch")
  assert contract.TASKS == TASKS
  path, _ = _write_source(tmp_path, "a", 3, 20, vocab.eos_id)
  batch = next(iter(pipeline.build(_data_cfg({"a": (path, 1.0)}), vocab, seq_len=SEQ_LEN, local_rows=2).dataset))
  contract.check_local_batch(batch, 2, SEQ_LEN)
  # Rows with user-speech feature slots follow it with the configured feature rows and width; a config
  # without feature rows refuses them.
  path, _ = _write_source(tmp_path, "b", 3, 20, vocab.eos_id, features=True)
  batch = next(iter(pipeline.build(_data_cfg({"b": (path, 1.0)}, feature_rows=8), vocab, seq_len=SEQ_LEN,
                                   local_rows=2).dataset))
  assert batch["audio_slots"].sum() > 0
  contract.check_local_batch(batch, 2, SEQ_LEN, num_feature_rows=8, feature_dim=FEATURE_DIM)
  with pytest.raises(ValueError, match="'audio_slots' marks user-speech slots, but data.feature_rows is 0"):
    contract.check_local_batch(batch, 2, SEQ_LEN)


def test_training_loop_runs_on_the_mixture_pipeline(tmp_path):
  """tools/train.py's loop with data.source='mixture' over tokenized ArrayRecord shards (tiny model)."""
  from configs import stage1
  from omnidiff_jax.training import loop
  cfg = stage1.get_config("tiny")
  eos = VocabLayout.from_config(cfg.vocab).eos_id
  paths = {name: _write_source(tmp_path, name, tag, 24, eos)[0] for name, tag in (("t2i", 3), ("text", 0))}
  cfg.data = _data_cfg({name: (path, 1.0) for name, path in paths.items()})
  cfg.train.steps, cfg.train.global_rows, cfg.train.seq_len = 2, 8, SEQ_LEN
  cfg.checkpoint.async_save = False
  result = loop.train(cfg, str(tmp_path / "run"))
  assert result["step"] == 2 and np.isfinite(result["loss"])


def test_make_source_gives_local_batches(tmp_path, vocab):
  path, _ = _write_source(tmp_path, "a", 5, 30, vocab.eos_id)
  cfg = ml_collections.ConfigDict(dict(
      vocab=dict(text_size=vocab.text_size, num_specials=vocab.num_specials, num_audio_codes=vocab.num_audio_codes,
                 num_image_codes=vocab.num_image_codes, size=vocab.size),
      train=dict(global_rows=4, seq_len=SEQ_LEN), data=_data_cfg({"a": (path, 1.0)})))
  batch = next(pipeline.make_source(cfg, process_index=1, process_count=2))
  assert {k: v.shape for k, v in batch.items()} == {k: (2, SEQ_LEN) for k in
                                                     ("input_ids", "labels", "positions", "segment_ids", "task_ids")}
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pipeline.make_source(cfg, process_count=3)


def test_iterator_state_through_orbax(tmp_path, vocab):
  ocp = pytest.importorskip("orbax.checkpoint")
  path, _ = _write_source(tmp_path, "a", 6, 30, vocab.eos_id, features=True)
  cfg = _data_cfg({"a": (path, 1.0)}, feature_rows=12)
  it = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset)
  for _ in range(3):
    next(it)
  mgr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("iter",),
                              item_handlers={"iter": grain.checkpoint.CheckpointHandler()})
  mgr.save(3, args=ocp.args.Composite(iter=grain.checkpoint.CheckpointSave(it)))
  mgr.wait_until_finished()
  expected = [next(it) for _ in range(3)]
  restored = iter(pipeline.build(cfg, vocab, seq_len=SEQ_LEN, local_rows=2).dataset)
  mgr.restore(3, args=ocp.args.Composite(iter=grain.checkpoint.CheckpointRestore(restored)))
  for want in expected:
    got = next(restored)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
