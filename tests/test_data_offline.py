"""Offline tokenization into ArrayRecord shards (resume, workers, reports), the CLI, and TFDS sources."""
import json
import os

import ml_collections
import numpy as np
import pytest

from omnidiff_jax.data import offline, pipeline, records
from omnidiff_jax.data.encode import SampleEncoder
from omnidiff_jax.data.errors import BadInputError
from tests.conftest import ROOT
from tests.fixtures.data.fakes import FakeMediaTokenizer, text_tokenizer_and_layout
from tool_cli import run_tool

FEATURE_DIM = 4


@pytest.fixture
def encoder():
  tok, layout = text_tokenizer_and_layout()
  return SampleEncoder(layout, tok, FakeMediaTokenizer(layout, FEATURE_DIM), feature_dim=FEATURE_DIM)


def _manifest(tmp_path, n=10, bad=(2, 7)):
  """n lines of VQA-with-precomputed-codes / TTS samples; lines in `bad` (1-based) reference missing files."""
  lines = []
  for i in range(1, n + 1):
    if i in bad:
      rec = {"messages": [{"role": "user", "content": "hi <|image|>"}, {"role": "assistant", "content": "x"}],
             "images": [f"missing_{i}.png"]}
    elif i % 2:
      rec = {"messages": [{"role": "user", "content": f"What is shown in the picture? {i}\n<|image|>"},
                          {"role": "assistant", "content": "a red bus " * i}], "images": [{"codes": [i % 32] * 1024}]}
    else:
      rec = {"messages": [{"role": "user", "content": f"Convert the text to speech.\nthe quick fox {i}"},
                          {"role": "assistant", "content": "<|audio|>"}], "audios": [{"codes": list(range(i))}]}
    lines.append(json.dumps(rec))
  path = tmp_path / "m.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _read_all(out_dir):
  ds = records.array_record_source(str(out_dir))
  return [ds[i] for i in range(len(ds))]


def test_tokenize_writes_shards_and_reports(tmp_path, encoder):
  path = _manifest(tmp_path)
  report = offline.tokenize(offline.manifest_items(path), str(tmp_path / "out"), encoder, records_per_shard=3,
                            batch_size=2, max_len=1030)
  assert sorted(os.listdir(tmp_path / "out")) == sorted(
      [f"data-{s:05d}.array_record{x}" for s in range(4) for x in ("", ".report.json")] + ["report.json"])
  assert (report["shards"], report["inputs"], report["written"], report["skipped"]) == (4, 10, 8, 2)
  assert [e["where"] for e in report["errors"]] == [f"{path}:2", f"{path}:7"]
  assert all("file not found" in e["reason"] for e in report["errors"])
  samples = _read_all(tmp_path / "out")
  expected = [encoder.encode(r) for _, make in offline.manifest_items(path) for r in [make()] if "missing" not in
              str(r.images)]
  assert len(samples) == len(expected) == 8
  for got, want in zip(samples, expected):
    for k in records.SAMPLE_KEYS:
      np.testing.assert_array_equal(got[k], want[k])
      assert got[k].dtype == want[k].dtype
  assert report["tokens"] == sum(len(s["input_ids"]) for s in expected)
  long = [f"{path}:{i}" for i in (1, 3, 5, 9) if len(encoder.encode(offline.manifest_items(path)[i - 1][1]())
                                                    ["input_ids"]) > 1030]
  assert report["overlong"] == long and long  # listed, not dropped (the pipeline's seq_len decides)


def test_tokenize_resumes_and_splits_across_workers(tmp_path, encoder):
  path, out = _manifest(tmp_path), str(tmp_path / "out")
  items = offline.manifest_items(path)
  for worker in range(2):  # two workers: shards 0, 2 and 1, 3
    offline.tokenize(items, out, encoder, records_per_shard=3, worker_index=worker, num_workers=2)
  reference = _read_all(out)
  # Interrupted run: shard 2 lost, a half-written temporary file left behind.
  os.remove(records.shard_path(out, "data", 2))
  open(records.shard_path(out, "data", 2) + ".tmp", "wb").write(b"partial")
  before = {s: os.path.getmtime(records.shard_path(out, "data", s)) for s in (0, 1, 3)}
  report = offline.tokenize(items, out, encoder, records_per_shard=3)
  assert {s: os.path.getmtime(records.shard_path(out, "data", s)) for s in (0, 1, 3)} == before  # not redone
  assert not os.path.exists(records.shard_path(out, "data", 2) + ".tmp")
  assert report["written"] == 8
  for got, want in zip(_read_all(out), reference):
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])


def test_tokenize_on_error_stops_at_file_and_line(tmp_path, encoder):
  path = _manifest(tmp_path)
  with pytest.raises(BadInputError, match=f"{path}:2: image '.*missing_2.png': file not found"):
    offline.tokenize(offline.manifest_items(path), str(tmp_path / "out"), encoder, on_error="error")
  assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(records.SHARD_SUFFIX)]


def test_cli(tmp_path):
  tok, _ = text_tokenizer_and_layout()
  tok.save(str(tmp_path / "tokenizer.json"))
  path = _manifest(tmp_path)
  cmd = ["--manifest", path, "--tokenizer", str(tmp_path / "tokenizer.json"), "--out_dir", str(tmp_path / "out"),
         "--config", os.path.join(ROOT, "configs", "tiny.py"), "--config.vocab.text_size=400",
         "--config.vocab.size=520", "--records_per_shard=4"]
  run = run_tool("tokenize_data", *cmd, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  summary = json.loads(run.stdout[:run.stdout.index("report:")])
  assert (summary["shards"], summary["written"], summary["skipped"]) == (3, 8, 2)
  # the tiny config's own layout (text_size 200) does not match
  wrong = run_tool("tokenize_data", *cmd[:-3], "--out_dir", tmp_path / "o2", timeout=120)
  assert wrong.returncode != 0 and "<|endoftext|>" in wrong.stderr


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A locally built TFDS dataset (ArrayRecord) with Tensor/Text features: speech int16 + transcript."""
  tfds = pytest.importorskip("tensorflow_datasets")

  class TinyAsr(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "speech": tfds.features.Tensor(shape=(None,), dtype=np.int16), "text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        speech = (np.sin(np.arange(8000 + 960 * i) / 3.0) * 8000).astype(np.int16)
        yield i, {"speech": speech, "text": "" if i == 4 else f"the quick fox {i}"}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  TinyAsr(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_tfds_offline_and_online(tiny_tfds, tmp_path, encoder):
  from omnidiff_jax.data import tfds_source
  report = offline.tokenize(offline.tfds_items("tiny_asr", "train", "asr", tiny_tfds), str(tmp_path / "out"), encoder)
  assert (report["written"], report["skipped"]) == (5, 1)
  source = tfds_source.data_source("tiny_asr", "train", tiny_tfds)  # TFDS shuffles examples on write
  empty, = [i for i in range(len(source)) if not source[i]["text"]]
  assert report["errors"][0]["where"] == f"tfds:tiny_asr/train[{empty}]"
  assert "empty text" in report["errors"][0]["reason"]
  # 16 kHz int16 speech: (8000 + 960 i) samples -> 8 + i fake 60 ms feature frames (i = 4 has no text).
  assert sorted(len(s["feature_slots"]) for s in _read_all(tmp_path / "out")) == [8, 9, 10, 11, 13]
  cfg = ml_collections.ConfigDict(dict(
      source="mixture", seed=0, on_error="skip", num_packing_bins=1, tail_pad_max=16, feature_rows=64,
      feature_dim=FEATURE_DIM, read_threads=1, prefetch=0,
      sources={"asr": dict(kind="tfds", path="tiny_asr", split="train", data_dir=tiny_tfds, adapter="asr",
                           weight=1.0)}))
  pipe = pipeline.build(cfg, encoder.vocab, seq_len=64, local_rows=2, encoder=encoder)
  batch = next(iter(pipe.dataset))
  assert int(batch["audio_slots"].sum()) == int((batch["audio_features"] != 0).any(-1).sum()) > 0
  assert pipe.policy.skipped <= 1
