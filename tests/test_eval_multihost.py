"""tools/eval.py in two local CPU processes (jax.distributed, gloo collectives), 2 devices each, against one process
with 4 devices, same 2 data x 2 fsdp mesh: the per-sample records agree (tokens, outputs, settings) and process 0
alone writes them and the table. The tiny random model over a fake MME copy (configs/eval/tiny.py: 2 settings,
cells of 4 samples)."""
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


def _command(workdir, tokenizer, mme, cpu_devices, *extra):
  return [sys.executable, str(ts.ROOT / "tools" / "eval.py"), "--config", str(ts.ROOT / "configs" / "eval" / "tiny.py"),
          f"--workdir={workdir}", f"--cpu_devices={cpu_devices}", f"--config.tokenizer={tokenizer}",
          f"--config.benchmarks.mme.root={mme}", "--config.mesh.data=2", "--config.mesh.fsdp=2", *extra]


def _records(workdir):
  out = {}
  for path in sorted(workdir.rglob("shard_*.jsonl")):
    for line in path.read_text().splitlines():
      record = json.loads(line)
      out[(record["setting"], record["id"])] = {k: record[k] for k in SAME_FIELDS}
  return out


def test_two_processes_give_the_same_records_as_one(tmp_path):
  backbone = cfglib.load_config_file(str(ts.ROOT / "configs" / "eval" / "tiny_backbone.py"))
  tokenizer = tmp_path / "tokenizer.json"
  tiny_tokenizer.build(VocabLayout.from_config(backbone.vocab)).save(str(tokenizer))
  mme = eval_fakes.make_mme(tmp_path / "mme")  # 2 subtasks x 2 images x 2 questions: 2 cells per setting
  env = ts.environment(tmp_path / "jax_cache")
  single = subprocess.run(_command(tmp_path / "single", tokenizer, mme, 4), env=env, capture_output=True, text=True,
                          timeout=600)
  assert single.returncode == 0, single.stderr[-4000:]

  address = f"127.0.0.1:{ts.free_port()}"
  procs = [subprocess.Popen(
      _command(tmp_path / "multi", tokenizer, mme, 2, f"--config.distributed.coordinator_address={address}",
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
  assert "| mme | default | perception |" in outputs[0][0] and "| mme |" not in outputs[1][0]  # the table: process 0

  one, two = _records(tmp_path / "single"), _records(tmp_path / "multi")
  assert len(one) == 16 and not any(r["failed"] for r in one.values())
  assert two == one
  table = {(r["setting"], r["value"]) for r in json.loads((tmp_path / "single" / "results.json").read_text())}
  assert {(r["setting"], r["value"]) for r in json.loads((tmp_path / "multi" / "results.json").read_text())} == table
