"""Multi-host start-up: jax.distributed.initialize from the config or the environment.

  distributed.coordinator_address set  -> explicit: that address, num_processes, process_id
  OMNIDIFF_COORDINATOR / OMNIDIFF_NUM_PROCESSES / OMNIDIFF_PROCESS_ID set -> the same from the environment
  otherwise, on a TPU pod or under SLURM / Open MPI etc. -> jax's own cluster auto-detection
  otherwise -> single process (nothing to do)

On CPU the cross-process collectives use `distributed.cpu_collectives` (gloo). Call before any other JAX
use in the process.
"""
from __future__ import annotations

import logging
import os

import jax
import ml_collections

log = logging.getLogger(__name__)


def initialize(dist_cfg: ml_collections.ConfigDict) -> None:
  address = dist_cfg.coordinator_address or os.environ.get("OMNIDIFF_COORDINATOR", "")
  if address:
    num = int(os.environ.get("OMNIDIFF_NUM_PROCESSES", dist_cfg.num_processes))
    pid = int(os.environ.get("OMNIDIFF_PROCESS_ID", dist_cfg.process_id))
    if not 0 <= pid < num:
      raise ValueError(f"process_id {pid} is out of range for num_processes {num}")
    jax.config.update("jax_cpu_collectives_implementation", dist_cfg.cpu_collectives)
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
  elif _cluster_detected():
    jax.distributed.initialize()
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def _cluster_detected() -> bool:
  """True under a launcher jax.distributed can read without arguments (multi-host TPU, SLURM, Open MPI)."""
  if os.environ.get("SLURM_NTASKS", "1") not in ("", "1") or os.environ.get("OMPI_COMM_WORLD_SIZE", "1") != "1":
    return True
  return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
