"""Train one curriculum stage, or all of them in order (each from the previous stage's final checkpoint).

  python tools/train.py --config configs/stage1.py:tiny --workdir /tmp/omni_tiny                # one stage
  python tools/train.py --config configs/stage1.py:tiny --workdir /tmp/omni_tiny --curriculum   # 1 -> 2 -> 3
  python tools/train.py --config configs/stage3.py --workdir gs://bucket/omni --cpu_devices=0   # 7B, real devices
  python tools/train.py --config configs/stage1.py --workdir /ckpt/omni --cpu_devices=0 \
      --config.train.init_from=/ckpt/omni_orbax   # stage 1 from converted Omni (or vocab-expanded Dream) weights

Stage <s> writes <workdir>/<s>/{checkpoints, metrics.jsonl, tensorboard}. Re-running the same command
resumes from the newest checkpoint (exactly: model, optimizer, step, RNG and data position). train.init_from
takes a converted checkpoint (tools/convert_checkpoint.py hf-to-orbax) or a training run's checkpoints
directory; a stage other than stage1 with an empty train.init_from starts from
<workdir>/<previous stage>/checkpoints. With --curriculum, the command-line --config.* overrides apply to
every stage. With --config.eval.every=N --config.eval.config=configs/eval/<small>.py, every N steps that eval
config's sweep runs on the current model into <workdir>/<stage>/eval/step_<N>/ and its metrics go to
metrics.jsonl and TensorBoard (eval/<benchmark>/<setting>/<metric>). Multi-host: set
--config.distributed.coordinator_address/num_processes/process_id (or OMNIDIFF_COORDINATOR, ...), or run
under a launcher jax.distributed detects (TPU pods, SLURM).
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

STAGES = ("stage1", "stage2", "stage3")

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "stage1.py:tiny"),
    "Stage config, e.g. configs/stage2.py or configs/stage2.py:tiny.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (one sub-directory per stage).", required=True)
_CURRICULUM = flags.DEFINE_bool("curriculum", False, "After the config's stage, run the later stages in order.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 8, "Fake this many CPU devices (XLA host platform); 0 uses the real devices.")


def stage_configs():
  """[(stage, config)] to run: the --config stage, then (with --curriculum) the later ones, same overrides."""
  from configs.stages import stage_config
  first = _CONFIG.value
  if first.get("stage") not in STAGES:
    raise app.UsageError(f"--config must be a stage config (configs/stage{{1,2,3}}.py), got stage "
                         f"{first.get('stage')!r}")
  runs = [(first.stage, first)]
  if _CURRICULUM.value:
    filename = config_flags.get_config_filename(flags.FLAGS["config"])
    arg = filename.split(":", 1)[1] if ":" in filename else None
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    for stage in STAGES[STAGES.index(first.stage) + 1:]:
      cfg = stage_config(stage, arg)
      for path, value in overrides.items():
        _set_path(cfg, path, value)
      runs.append((stage, cfg))
  return runs


def _set_path(cfg, path: str, value) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    cfg = cfg[p]
  cfg[leaf] = value


def eval_hook(cfg, workdir: str):
  """The training eval hook of cfg.eval (None when eval.every is 0)."""
  if not cfg.eval.every:
    return None
  if not cfg.eval.config:
    raise app.UsageError("eval.every > 0 needs eval.config (an eval config file, configs/eval/*.py)")
  from omnidiff_jax import sharding
  from omnidiff_jax.config import load_config_file
  from omnidiff_jax.eval.hook import TrainEvalHook
  from omnidiff_jax.vocab import VocabLayout, load_tokenizer
  eval_cfg = load_config_file(cfg.eval.config)
  vocab = VocabLayout.from_config(cfg.vocab)
  return TrainEvalHook(eval_cfg, vocab, load_tokenizer(eval_cfg.tokenizer), sharding.make_mesh(cfg.mesh), workdir)


def main(argv):
  del argv
  if _CPU_DEVICES.value:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(_CPU_DEVICES.value)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-file INFO lines
  runs = stage_configs()
  from omnidiff_jax.training import distributed, loop
  distributed.initialize(runs[0][1].distributed)
  for stage, cfg in runs:
    previous = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
    if previous and not cfg.train.init_from:
      prev_ckpt = os.path.join(_WORKDIR.value, previous, "checkpoints")
      if os.path.isdir(prev_ckpt):
        cfg.train.init_from = prev_ckpt
      elif _CURRICULUM.value or len(runs) > 1:
        raise app.UsageError(f"{stage} needs {previous}'s checkpoints in {prev_ckpt}")
    logging.info("%s: %d steps, init from %s", stage, cfg.train.steps, cfg.train.init_from or "random init")
    stage_dir = os.path.join(_WORKDIR.value, stage)
    result = loop.train(cfg, stage_dir, eval_hook(cfg, stage_dir))
    logging.info("%s %s at step %d, loss %.4f", stage, result["status"], result["step"],
                 result.get("loss", float("nan")))
    if result["status"] != "completed":
      return


if __name__ == "__main__":
  app.run(main)
