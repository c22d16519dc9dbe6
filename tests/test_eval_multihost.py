"""tools/eval.py in two local CPU processes (jax.distributed, gloo collectives), 2 devices each, against one process
with 4 devices, same 2 data x 2 fsdp mesh: the per-sample records agree (tokens, outputs, settings) and process 0
alone writes them and the table. The tiny random models (configs/eval/tiny.py) over a fake MME copy (2 settings,
cells of 4 samples) and over a fake LibriTTS copy with asr_model='self' (the generated speech transcribed by the
backbone's ASR task, itself sharded over the processes)."""
import json
import subprocess
import sys

import eval_fakes
import tiny_tokenizer
import train_subprocess as ts
from omnidiff_jax import config as cfglib
from omnidiff_jax.vocab import VocabLayout

# Record fields that must not depend on how the prompts were spread over processes ('seconds' does).
SAME_FIELDS = ("tokens", "output", "metric", "settings", "region_len", "prompt_len", "failed", "error", "shard")


def _command(workdir, tokenizer, config, cpu_devices, *extra):
  return [sys.executable, str(ts.ROOT / "tools" / "eval.py"), "--config", str(ts.ROOT / "configs" / "eval" / config),
          f"--workdir={workdir}", f"--cpu_devices={cpu_devices}", f"--config.tokenizer={tokenizer}",
          "--config.mesh.data=2", "--config.mesh.fsdp=2", *extra]


def _records(workdir):
  out = {}
  for path in sorted(workdir.rglob("shard_*.jsonl")):
    for line in path.read_text().splitlines():
      record = json.loads(line)
      out[(record["setting"], record["id"])] = {k: record[k] for k in SAME_FIELDS}
  return out


def _one_and_two_processes(tmp_path, config, *extra):
  """Runs the sweep in one process (4 devices) and in two (2 devices each); returns both runs' records and
  stdouts (the two-process run's of process 0, then 1)."""
  backbone = cfglib.load_config_file(str(ts.ROOT / "configs" / "eval" / "tiny_backbone.py"))
  tokenizer = tmp_path / "tokenizer.json"
  tiny_tokenizer.build(VocabLayout.from_config(backbone.vocab)).save(str(tokenizer))
  env = ts.environment(tmp_path / "jax_cache")
  single = subprocess.run(_command(tmp_path / "single", tokenizer, config, 4, *extra), env=env, capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-4000:]

  address = f"127.0.0.1:{ts.free_port()}"
  procs = [subprocess.Popen(
      _command(tmp_path / "multi", tokenizer, config, 2, *extra, f"--config.distributed.coordinator_address={address}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
  try:
    outputs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  assert "process 1 of 2, 2 local / 4 global devices" in outputs[1][1]
  return _records(tmp_path / "single"), _records(tmp_path / "multi"), [out for out, _ in outputs]


def _table(workdir):
  return {(r["setting"], r["value"]) for r in json.loads((workdir / "results.json").read_text())}


def test_two_processes_give_the_same_records_as_one(tmp_path):
  mme = eval_fakes.make_mme(tmp_path / "mme")  # 2 subtasks x 2 images x 2 questions: 2 cells per setting
  one, two, stdouts = _one_and_two_processes(tmp_path, "tiny.py", f"--config.benchmarks.mme.root={mme}")
  assert "| mme | default | perception |" in stdouts[0] and "| mme |" not in stdouts[1]  # the table: process 0
  assert len(one) == 16 and not any(r["failed"] for r in one.values())
  assert two == one
  assert _table(tmp_path / "multi") == _table(tmp_path / "single")


TTS_TEXTS = ("a red bus", "the bus", "red bus", "a dog")  # prompts of one bucket (configs/eval/tiny.py:tts: region 96)


def test_tts_with_our_own_asr_in_two_processes_gives_the_same_records_as_one(tmp_path):
  chapter = tmp_path / "LibriTTS" / "test-clean" / "1" / "2"
  chapter.mkdir(parents=True)
  for number, text in enumerate(TTS_TEXTS):
    (chapter / f"1_2_{number:06d}_000000.normalized.txt").write_text(text)
  one, two, stdouts = _one_and_two_processes(tmp_path, "tiny.py:tts", f"--config.benchmarks.tts.root={tmp_path}")
  assert "| tts | sampled96 | wer |" in stdouts[0] and "| tts |" not in stdouts[1]
  assert len(one) == len(TTS_TEXTS)
  transcribed = [r for r in one.values() if not r["failed"]]
  assert transcribed, [r["error"] for r in one.values()]  # some speech went through the ASR pass
  assert two == one  # tokens (sampled: each sample's own key), transcripts (output), WER inputs (metric)
  assert _table(tmp_path / "multi") == _table(tmp_path / "single")
