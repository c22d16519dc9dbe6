"""The demo: a small Omni model trained on the built-in corpus through the three stages, every task sampled and
scored on held-out data, an HTML report.

  python tools/demo.py                                    # full run into /tmp/omnidiff_demo
  python tools/demo.py --quick --workdir /tmp/demo_quick  # configs/demo.py:quick (README: measured budget)
  python tools/demo.py --config.stages.stage3.steps=600   # any configs/demo.py field

Steps (omnidiff_jax/demo/run.py): corpus -> media networks -> text BPE -> ArrayRecord shards -> stage 1 -> 2 -> 3
(tools/train.py's loop and checkpoints) -> eval of every task on the held-out split, decoding modes compared for
T2I and ASR -> <workdir>/report.html (its path is printed last). Re-running the same command skips finished steps
and resumes a killed stage from its last checkpoint.
"""
import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"),
    "Demo config (configs/demo.py[:quick]).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/omnidiff_demo", "Output directory (resumed when it exists).")
_QUICK = flags.DEFINE_bool("quick", False, "Use configs/demo.py:quick (fewer steps and samples; CI).")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 2, "Fake this many CPU devices (XLA host platform); 0 uses the real devices.")
_COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache", True, "Keep compiled programs in <workdir>/jax_cache (JAX's persistent compilation "
    "cache): identical programs of later steps (each stage's init, stage 3's train step when its schedule equals "
    "stage 2's) and of re-runs load instead of compiling.")


def main(argv):
  del argv
  if _CPU_DEVICES.value:
    from omnidiff_jax.platform import use_fake_cpu_devices
    use_fake_cpu_devices(_CPU_DEVICES.value)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  if _COMPILATION_CACHE.value:
    import jax
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(_WORKDIR.value), "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  cfg = _CONFIG.value
  if _QUICK.value:
    if config_flags.get_override_values(flags.FLAGS["config"]) or ":" in config_flags.get_config_filename(
        flags.FLAGS["config"]):
      raise app.UsageError("--quick picks configs/demo.py:quick; give --config=configs/demo.py:quick with the "
                           "--config.* overrides instead")
    from configs import demo
    cfg = demo.get_config("quick")
  from omnidiff_jax.demo import run
  path = run.run(_WORKDIR.value, cfg)
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
