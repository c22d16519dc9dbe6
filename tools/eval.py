"""Evaluation sweeps: benchmarks x sampler settings, batched and sharded, resumable, with tables and plots.

  python tools/eval.py --config configs/eval/table1.py --workdir /ckpt/eval/t1 --cpu_devices=0 \\
      --config.checkpoint=/ckpt/omni_orbax --config.tokenizer=/ckpt/Omni-Diffusion \\
      --config.benchmarks.librispeech.root=/data/LibriSpeech --config.networks.cmvn=/ckpt/SenseVoiceSmall/am.mvn
  python tools/eval.py --config configs/eval/table2.py --workdir /ckpt/eval/t2 --cpu_devices=0 ...
  python tools/eval.py --config configs/eval/table3.py --workdir /ckpt/eval/t3 --cpu_devices=0 ...

Writes <workdir>/<benchmark>/<setting>/shard_*.jsonl (one record per sample) and results.{json,csv,md},
quality_vs_steps.png, quality_vs_tokens_per_s.png; re-running skips the finished cells. The model loads sharded
over the config's mesh (checkpoints.load(..., mesh=)); without a checkpoint it is a random init of
config.model_config (demos). Multi-host: start one process per host (config.distributed); results land on
process 0.
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags


_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config (configs/eval/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (records, tables, plots).", required=True)
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Fake this many CPU devices (XLA host platform); 0 uses the "
                                    "real devices.")


def load_backbone(cfg, mesh):
  """(model, vocab layout) of config.checkpoint, or a random init of config.model_config with a warning."""
  from omnidiff_jax import sharding
  from omnidiff_jax.config import load_config_file
  from omnidiff_jax.vocab import VocabLayout
  if cfg.checkpoint:
    from omnidiff_jax import checkpoints
    model, model_cfg = checkpoints.load(cfg.checkpoint, mesh=mesh)
  else:
    logging.warning("no config.checkpoint: evaluating a random init of %s", cfg.model_config)
    model_cfg = load_config_file(cfg.model_config)
    model = sharding.create_model(model_cfg.model, mesh, seed=cfg.seed)
  return model, VocabLayout.from_config(model_cfg.vocab)


def main(argv):
  del argv
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config is required (e.g. configs/eval/table1.py)")
  if not cfg.tokenizer:
    raise app.UsageError("config.tokenizer is required: the tokenizer.json (or its directory) of the checkpoint")
  if _CPU_DEVICES.value:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(_CPU_DEVICES.value)
  from omnidiff_jax.eval import runner
  try:
    runner.check_config(cfg)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from omnidiff_jax import sharding
  from omnidiff_jax.eval.evaluators import Context
  from omnidiff_jax.training import distributed
  from omnidiff_jax.vocab import load_tokenizer, verify_tokenizer
  distributed.initialize(cfg.distributed)
  mesh = sharding.make_mesh(cfg.mesh)
  model, vocab = load_backbone(cfg, mesh)
  verify_tokenizer(vocab, cfg.tokenizer)
  ctx = Context(model, vocab, load_tokenizer(cfg.tokenizer), cfg.networks, cfg.seed)
  rows = runner.sweep(cfg, ctx, mesh, _WORKDIR.value)
  if rows:
    with open(os.path.join(_WORKDIR.value, "results.md")) as f:
      sys.stdout.write(f.read())


if __name__ == "__main__":
  app.run(main)
