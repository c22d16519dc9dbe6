"""HBM bytes of the sampler's top-p filter per step, from the compiled HLO (omnidiff_jax.aot.hlo_cost: every
operation's operands and outputs, loop trips counted), as a multiple of the logits' bytes. A property of the
compiled program, not a timing: independent of the machine's load.

  python bench/top_p_cost.py                                  # XLA:CPU, the 7B's padded vocabulary
  python bench/top_p_cost.py --target=tpu:v5e:1x1             # TPU v5e compiler (libtpu, no TPU needed)
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 python bench/top_p_cost.py --target=cuda:h100:1x1x1      # jax[cuda12]
"""
import os

from absl import app, flags

_TARGET = flags.DEFINE_string("target", "cpu", "'cpu', 'tpu:<topology>' or 'cuda:<chip>:<topology>' (its first "
                              "device).")
_VOCAB = flags.DEFINE_integer("vocab", 176_384, "Logit width (the 7B's padded vocabulary).")
_WINDOWS = flags.DEFINE_list("windows", ["256", "32"], "Scored positions per step (exact region, KV block).")
_TOP_P = flags.DEFINE_float("top_p", 0.9, "top_p.")


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  import numpy as np

  from omnidiff_jax.aot import hlo_cost, targets
  from omnidiff_jax.sampling import logits as logits_lib

  if _TARGET.value == "cpu":
    device, on_chip = jax.devices()[0], ()
  else:
    platform, _, rest = _TARGET.value.partition(":")
    chip, topology = rest.split(":", 1) if platform == "cuda" else ("", rest)
    target = targets.target_config(platform, topology, chip)
    device, on_chip = targets.devices(target).flat[0], targets.chip_of(target).on_chip_memory_spaces
  mesh = jax.sharding.Mesh(np.array([device]), ("data",))  # the target's platform chooses the radix
  sharding = jax.sharding.NamedSharding(mesh, jax.P())
  for window in map(int, _WINDOWS.value):
    x = jax.ShapeDtypeStruct((1, window, _VOCAB.value), jnp.float32, sharding=sharding)
    with jax.set_mesh(mesh):
      compiled = jax.jit(lambda x: logits_lib.top_p_filter(x, _TOP_P.value)).lower(x).compile()
    cost = hlo_cost.analyze(compiled.as_text(), on_chip_memory_spaces=on_chip)  # TPU VMEM is not HBM
    logits_bytes = window * _VOCAB.value * 4
    print(f"{_TARGET.value} top_p_filter (1, {window}, {_VOCAB.value}) f32: {cost.bytes / 1e6:.1f} MB = "
          f"{cost.bytes / logits_bytes:.1f} x the logits' {logits_bytes / 1e6:.1f} MB; "
          f"passes {sorted(cost.trip_counts.values())}")


if __name__ == "__main__":
  app.run(main)
