"""Process set-up that has to happen before JAX starts its backend, and the platform being compiled for."""
import os


def use_fake_cpu_devices(count: int) -> None:
  """Makes the XLA host platform expose `count` CPU devices and selects it (call before importing jax)."""
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={count}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def target_platform() -> str:
  """Platform of the devices being compiled for: the current mesh's ('tpu' for a TPU topology compiled on a
  CPU host; read from the abstract mesh's device description, the public view of the mesh that also holds
  under jit), else the default backend's."""
  import jax

  device = jax.sharding.get_abstract_mesh().abstract_device
  return jax.default_backend() if device is None else device.platform
