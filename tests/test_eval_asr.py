"""LibriSpeech ASR through the whole eval path on the tiny random model: WAVs -> random tiny SenseVoice +
projector -> asr_eval prompts, each row with its own region length int(0.2 x its prompt length)."""
import json

import jax
import ml_collections
import numpy as np
import pytest
import soundfile

import tiny_tokenizer
from configs.eval.common import base_config
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.eval import runner
from omnidiff_jax.eval.evaluators import Context
from omnidiff_jax.vocab import VocabLayout


@pytest.mark.filterwarnings("ignore:no (sensevoice|projector) weights")
def test_librispeech_rows_keep_their_own_region_length(tmp_path):
  chapter = tmp_path / "LibriSpeech" / "test-clean" / "61" / "70968"
  chapter.mkdir(parents=True)
  durations = {"61-70968-0000": 0.4, "61-70968-0001": 1.0, "61-70968-0002": 1.6}
  rng = np.random.default_rng(0)
  for utt, seconds in durations.items():
    soundfile.write(str(chapter / f"{utt}.flac"), 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
  (chapter / "61-70968.trans.txt").write_text("".join(f"{utt} HE BEGAN A CONFUSED COMPLAINT\n" for utt in durations))
  backbone = cfglib.load_config_file("configs/eval/tiny_backbone.py")
  vocab = VocabLayout.from_config(backbone.vocab)
  cfg = base_config()
  cfg.batch_size, cfg.shard_size, cfg.prompt_bucket = 2, 8, 64
  cfg.networks.speech_in_config = "configs/sensevoice_tiny.py"
  cfg.benchmarks.librispeech = ml_collections.ConfigDict(dict(kind="librispeech", root=str(tmp_path), paper=7.05))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  ctx = Context(sharding.create_model(backbone.model, mesh, seed=0), vocab, tiny_tokenizer.build(vocab), cfg.networks)
  (row,) = runner.sweep(cfg, ctx, mesh, str(tmp_path / "run"))
  records = sorted(_records(tmp_path / "run"), key=lambda r: r["id"])
  assert [r["id"] for r in records] == sorted(durations) and not any(r["failed"] for r in records)
  lengths = [r["region_len"] for r in records]
  assert len(set(lengths)) == 3  # longer audio -> longer prompt -> longer region, in one sweep
  for r in records:
    assert r["region_len"] == max(int(0.2 * r["prompt_len"]), 1) and len(r["tokens"]) == r["region_len"]
    assert r["settings"]["steps"] == max(r["region_len"] // 2, 1) and r["settings"]["block_size"] == r["region_len"]
  assert row["metric"] == "wer" and row["samples"] == 3 and row["paper"] == 7.05 and row["value"] >= 0
  export = tmp_path / "run" / "librispeech" / "default" / "export"
  assert (export / "ref.txt").read_text().splitlines() == [f"{i} HE BEGAN A CONFUSED COMPLAINT" for i in range(3)]
  assert (export / "hyp.txt").read_text().splitlines() == [f"{i} {r['output']}" for i, r in enumerate(records)]


def _records(workdir):
  return [json.loads(line) for path in sorted(workdir.rglob("shard_*.jsonl")) for line in path.read_text().splitlines()]
