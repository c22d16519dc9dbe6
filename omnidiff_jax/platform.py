"""Process set-up that has to happen before JAX starts its backend."""
import os


def use_fake_cpu_devices(count: int) -> None:
  """Makes the XLA host platform expose `count` CPU devices and selects it (call before importing jax)."""
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={count}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
