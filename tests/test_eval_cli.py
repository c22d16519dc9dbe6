"""tools/eval.py end to end on the tiny random model (configs/eval/tiny.py) over a fake MME copy."""
import json
import pathlib
import subprocess
import sys

import eval_fakes
import tiny_tokenizer
from omnidiff_jax import config as cfglib
from omnidiff_jax.vocab import VocabLayout

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  return subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), *args], capture_output=True, text=True,
                        cwd=ROOT, timeout=600)


def test_eval_cli_writes_the_table_and_names_a_missing_dataset(tmp_path):
  backbone = cfglib.load_config_file(str(ROOT / "configs" / "eval" / "tiny_backbone.py"))
  tok_file = tmp_path / "tokenizer.json"
  tiny_tokenizer.build(VocabLayout.from_config(backbone.vocab)).save(str(tok_file))
  mme = eval_fakes.make_mme(tmp_path / "mme", subtasks=("existence",), images=("a.png",))
  common = ["--config", str(ROOT / "configs" / "eval" / "tiny.py"), f"--config.tokenizer={tok_file}",
            "--cpu_devices=2", "--config.mesh.fsdp=1"]
  out = _run(*common, f"--workdir={tmp_path / 'run'}", f"--config.benchmarks.mme.root={mme}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| mme | steps4 | perception |" in out.stdout and "| mme | default | perception |" in out.stdout
  rows = json.loads((tmp_path / "run" / "results.json").read_text())
  assert [r["samples"] for r in rows] == [2, 2] and all(r["complete"] for r in rows)
  missing = _run(*common, f"--workdir={tmp_path / 'run2'}")
  assert missing.returncode != 0
  assert "benchmark mme: set benchmarks.mme.root (now empty)" in missing.stderr
