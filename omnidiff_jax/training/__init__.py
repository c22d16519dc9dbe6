"""Training: the masked-diffusion loss, optimizer, sharded train step, checkpoints, metrics, multi-host."""
