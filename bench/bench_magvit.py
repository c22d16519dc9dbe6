"""MAGVIT-v2 throughput: our jitted encode/decode vs upstream's PyTorch module (eager, same random weights,
same CPU). Prints images/s for both, the ratio, and the largest output differences between the two.

Upstream's code is not in this repository: extract it first (see tests/magvit_torch_reference.py).

  python bench/bench_magvit.py --upstream_dir /tmp/magvit_upstream                      # released, 256 px
  python bench/bench_magvit.py --upstream_dir /tmp/magvit_upstream --config configs/magvit.py:tiny --batch 8
"""
import os
import platform
import sys

from absl import app, flags
from ml_collections import config_flags

from timing import LoadGuard, mean_seconds

sys.path[:0] = [os.path.join(os.path.dirname(__file__), ".."), os.path.join(os.path.dirname(__file__), "..", "tests")]

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "magvit.py"), "MAGVIT-v2 config.")
_UPSTREAM = flags.DEFINE_string("upstream_dir", None, "Directory with upstream's modeling_magvitv2.py.",
                                required=True)
_BATCH = flags.DEFINE_integer("batch", 2, "Images per call.")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed calls per framework and direction.")


def main(argv):
  del argv
  import jax
  import numpy as np
  import torch

  import magvit_torch_reference
  from omnidiff_jax.models.magvit import params as magvit_ckpt
  from omnidiff_jax.models.magvit import modeling as magvit

  cfg = _CONFIG.value
  b, res, iters = _BATCH.value, cfg.image.resolution, _ITERS.value
  torch.set_num_threads(os.cpu_count())
  torch.set_grad_enabled(False)
  state_dict = magvit_ckpt.random_torch_state_dict(cfg.model, cfg.run.seed)
  ours = magvit_ckpt.model_from_torch_state_dict(cfg.model, state_dict)
  ref = magvit_torch_reference.build(magvit_torch_reference.load_upstream(_UPSTREAM.value), cfg.model, state_dict)

  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (b, res, res, 3)).astype(np.float32)
  images_nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  codes = np.asarray(magvit.encode(ours, images))
  codes_torch = torch.from_numpy(codes.astype(np.int64))

  times = {
      ("encode", "jax (ours)"): mean_seconds(lambda: magvit.encode(ours, images).block_until_ready(), iters),
      ("encode", "torch (upstream)"): mean_seconds(lambda: ref.get_code(images_nchw), iters),
      ("decode", "jax (ours)"): mean_seconds(lambda: magvit.decode(ours, codes).block_until_ready(), iters),
      ("decode", "torch (upstream)"): mean_seconds(lambda: ref.decode_code(codes_torch), iters),
  }
  latent_err = np.abs(np.asarray(ours.encode_latents(images)) -
                      ref.encoder(images_nchw).permute(0, 2, 3, 1).numpy()).max()
  ref_codes = ref.get_code(images_nchw).numpy()
  pixel_err = np.abs(np.asarray(magvit.decode(ours, codes)) -
                     torch.clamp((ref.decode_code(codes_torch) + 1) / 2, 0, 1).permute(0, 2, 3, 1).numpy()).max()

  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"torch {torch.__version__}")
  print(f"config: ch {cfg.model.ch}, encoder {tuple(cfg.model.encoder_ch_mult)} x {tuple(cfg.model.encoder_num_res_blocks)}"
        f", decoder {tuple(cfg.model.decoder_ch_mult)} x {tuple(cfg.model.decoder_num_res_blocks)}; "
        f"batch {b} x {res}x{res} px -> {codes.shape[1]} codes")
  for direction in ("encode", "decode"):
    for name in ("jax (ours)", "torch (upstream)"):
      t = times[(direction, name)]
      print(f"{direction} {name:>17}: {t * 1e3:9.1f} ms/call, {b / t:9.3f} images/s")
    ratio = times[(direction, "torch (upstream)")] / times[(direction, "jax (ours)")]
    print(f"{direction} ratio (jax images/s / torch images/s): {ratio:.2f}x")
  print(f"parity: max |latent diff| {latent_err:.2e}; codes equal {(codes == ref_codes).sum()}/{codes.size}; "
        f"max |decoded [0,1] diff| {pixel_err:.2e}")


if __name__ == "__main__":
  with LoadGuard():
    app.run(main)
