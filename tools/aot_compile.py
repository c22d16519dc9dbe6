"""Compile the real train step and sampler for a TPU topology or a GPU node on this (CPU) machine, and report
memory per device against usable HBM, FLOPs and bytes with loop trip counts, roofline ms and the MFU bound.

  pip install -e .[tpu]        # libtpu: TPU topologies on any CPU machine (GPU targets: jax[cuda12])
  python tools/aot_compile.py --config configs/tpu/v5p_8.py                       # stage 1, the config's target
  python tools/aot_compile.py --config configs/tpu/v5e_16.py:stage3 --what=train,sample_exact,sample_kv
  python tools/aot_compile.py --config configs/stage1.py:tiny --target=tpu:v5e:2x2 \
      --config.model.attention_impl=splash --out /tmp/tiny.json
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 python tools/aot_compile.py --config configs/gpu/h100_8.py   # jax[cuda12]

The config is a stage config (configs/stage{1,2,3}.py or a configs/tpu|gpu/ variant) whose `target` section
(omnidiff_jax.aot.targets) names the devices; --target overrides it. The sampler compiles the config's
model with inference dtypes (--sample_param_dtype) on the same mesh. Prints one JSON object per compile and
writes the list to --out.
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags


_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config with a `target` section.")
_TARGET = flags.DEFINE_string("target", "", "Overrides config.target: 'tpu:<topology>' (e.g. tpu:v5p:2x2x2) or "
                              "'cuda:<chip>:<topology>' (e.g. cuda:h100:1x1x8).")
_WHAT = flags.DEFINE_list("what", ["train"], "Any of train, sample_exact, sample_kv.")
_OUT = flags.DEFINE_string("out", "", "Write the results (a JSON list) here.")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 1, "Sampler: prompts per batch.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 128, "Sampler: prompt length (left padded).")
_REGION_LEN = flags.DEFINE_integer("region_len", 256, "Sampler: generation region length.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 64, "Sampler: denoising steps.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 32, "Sampler: block size of the KV-cache sampler.")
_HLO_OUT = flags.DEFINE_string("hlo_out", "", "Write each compiled module's HLO text to <this>.<what>.hlo.")
_SAMPLE_DTYPE = flags.DEFINE_string("sample_param_dtype", "bfloat16", "Sampler: parameter dtype (inference).")

WHATS = ("train", "sample_exact", "sample_kv")


def _target(cfg):
  from omnidiff_jax.aot import targets
  if _TARGET.value:
    platform, _, rest = _TARGET.value.partition(":")
    chip, topology = rest.split(":", 1) if platform == "cuda" else ("", rest)
    return targets.target_config(platform, topology, chip)
  if "target" not in cfg:
    raise app.UsageError("the config has no `target` section (configs/tpu/*.py, configs/gpu/*.py); pass --target")
  return cfg.target


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host only traces; the target's compiler compiles
  unknown = set(_WHAT.value) - set(WHATS)
  if unknown:
    raise app.UsageError(f"--what: unknown {sorted(unknown)}; choose from {WHATS}")
  from omnidiff_jax import sharding
  from omnidiff_jax.aot import compile as aot, targets
  from omnidiff_jax.sampling.schedule import SamplerConfig

  cfg = _CONFIG.value
  target = _target(cfg)
  devices = targets.devices(target)
  chip = targets.chip_of(target)
  mesh = sharding.make_mesh(cfg.mesh, list(devices.flat))
  print(f"target {target.platform} {target.topology}: {devices.size} x {devices.flat[0].device_kind}, "
        f"mesh {dict(mesh.shape)}", flush=True)
  results = []
  for what in _WHAT.value:
    if what == "train":
      result, compiled = aot.train_report(cfg, mesh, chip)
    else:
      infer = cfg.copy_and_resolve_references()
      infer.model.param_dtype = _SAMPLE_DTYPE.value
      if infer.model.get("audio_projector") is not None:
        infer.model.audio_projector.param_dtype = _SAMPLE_DTYPE.value
      kv = what == "sample_kv"
      sampler_cfg = SamplerConfig(steps=_SAMPLE_STEPS.value, kv_cache=kv, block_size=_BLOCK_SIZE.value if kv else None)
      result, compiled = aot.sampler_report(infer, mesh, chip, sampler_cfg, _SAMPLE_BATCH.value, _PROMPT_LEN.value,
                                     _REGION_LEN.value)
    result.update(target=f"{target.platform}:{target.chip + ':' if target.chip else ''}{target.topology}",
                  config=config_flags.get_config_filename(flags.FLAGS["config"]))
    if _HLO_OUT.value and compiled is not None:
      with open(f"{_HLO_OUT.value}.{what}.hlo", "w") as f:
        f.write(compiled.as_text())
    print(json.dumps(result), flush=True)
    print(f"{what}: {result['verdict']}; compile {result['compile_seconds']} s; roofline "
          f"{result['roofline_ms']:.1f} ms ({result['bound']} bound), MFU bound {result['mfu_bound']:.2f}", flush=True)
    results.append(result)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
