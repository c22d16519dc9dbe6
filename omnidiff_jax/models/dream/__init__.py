"""Dream / Omni-Diffusion backbone: modeling, attention kernels and the HF parameter mapping."""
