"""The training loop's eval hook: a tiny stage runs an MME sweep on its current model every step and logs the
metrics to metrics.jsonl and TensorBoard."""
import json

import ml_collections
import numpy as np
import pytest

import eval_fakes
import tiny_tokenizer
from configs.eval.common import base_config
from omnidiff_jax import config as cfglib
from omnidiff_jax import sharding
from omnidiff_jax.eval.hook import TrainEvalHook
from omnidiff_jax.training import loop
from omnidiff_jax.training.config import add_training_sections
from omnidiff_jax.vocab import VocabLayout


@pytest.mark.filterwarnings("ignore:no MAGVIT-v2 weights")
def test_eval_hook_logs_metrics_every_n_steps(tmp_path):
  cfg = cfglib.load_config_file("configs/eval/tiny_backbone.py")
  cfg = add_training_sections(cfg, stage="test", learning_rate=1e-3, mixture={"vqa": 1.0, "text": 1.0}, steps=2,
                              global_rows=8, seq_len=64, warmup_steps=1)
  cfg.data.min_len, cfg.data.max_len = 3, 10
  cfg.checkpoint.async_save = False
  cfg.eval.every = 1
  eval_cfg = base_config()
  eval_cfg.batch_size, eval_cfg.shard_size, eval_cfg.image_resolution = 2, 4, 32
  eval_cfg.networks.magvit_config = "configs/magvit.py:tiny"
  eval_cfg.settings = [dict(name="steps2", steps=2)]
  mme = eval_fakes.make_mme(tmp_path / "mme", subtasks=("existence",), images=("a.png",))
  eval_cfg.benchmarks.mme = ml_collections.ConfigDict(dict(kind="mme", root=str(mme)))
  vocab = VocabLayout.from_config(cfg.vocab)
  hook = TrainEvalHook(eval_cfg, vocab, tiny_tokenizer.build(vocab), sharding.make_mesh(cfg.mesh),
                       str(tmp_path / "run"))
  calls = []

  def recorded(step, model):
    calls.append(step)
    return hook(step, model)

  result = loop.train(cfg, str(tmp_path / "run"), eval_hook=recorded)
  assert result["step"] == 2 and calls == [1, 2]
  lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  evals = [line for line in lines if "eval/mme/steps2/perception" in line]
  assert [line["step"] for line in evals] == [1, 2]
  assert all(0 <= line["eval/mme/steps2/perception"] <= 200 and np.isfinite(line["eval/mme/steps2/existence/acc"])
             for line in evals)
  assert (tmp_path / "run" / "eval" / "step_00000002" / "results.md").exists()
  assert [step for tag, step in _scalar_events(tmp_path / "run" / "tensorboard")
          if tag == "eval/mme/steps2/perception"] == [1, 2]


def _scalar_events(folder):
  """(tag, step) of every scalar in the TensorBoard event files (TFRecord frames of tensorboardX Event protos)."""
  from tensorboardX.proto import event_pb2
  out = []
  for path in sorted(folder.iterdir()):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      length = int(np.frombuffer(data[offset:offset + 8], np.uint64)[0])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      out += [(value.tag, event.step) for value in event.summary.value]
  return out
