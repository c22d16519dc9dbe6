"""Train-step throughput: our jitted JAX step vs an equivalent eager PyTorch step on the same CPU.

Both steps: packed rows from the synthetic source, upstream masking (per-token thr, 0.6 x for tail pads),
bidirectional block-diagonal attention, shifted fp32 cross-entropy averaged per row, clip 1.0, AdamW(0.9,
0.95, 1e-8, weight decay 0). Reference: transformers Qwen2ForCausalLM (eager attention, 4D bool mask) +
torch.optim.AdamW. Same config and batches (each framework has its own random initialisation). Steps
alternate between the frameworks (same load for both); prints the median step time, tokens/s, the ratio and
MFU (JAX, when the device's peak is known).

  python bench/bench_train.py --config configs/tiny.py
  python bench/bench_train.py --config configs/medium.py --rows 4 --seq 256
  python bench/bench_train.py --config configs/omni_7b.py --rows 8 --seq 3072 --torch=false   # accelerator
"""
import os
import platform
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from timing import LoadGuard  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), "Model config.")
_ROWS = flags.DEFINE_integer("rows", 8, "Packed rows per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per row.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed steps per framework (alternating; the median is reported).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch reference step.")
_MESH = flags.DEFINE_string("mesh", "1,-1,1", "data,fsdp,tensor for the JAX step.")


def _jax_step(cfg, batches):
  """A callable running one jitted step on the next batch (compiled and warmed up) and returning its loss."""
  from omnidiff_jax import sharding
  from omnidiff_jax.training import batch as batchlib, train_step
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = (int(x) for x in _MESH.value.split(","))
  mesh = sharding.make_mesh(cfg.mesh)
  trainer = train_step.make_trainer(cfg, mesh)
  state = trainer.init()
  device_batches = [batchlib.global_batch(mesh, b, cfg.train.global_rows) for b in batches]
  box = {"state": state, "i": 0}

  def step():
    box["state"], m = trainer.step(box["state"], device_batches[box["i"] % len(device_batches)])
    box["i"] += 1
    return float(m["loss"])  # waits for the step

  step(), step()  # compile + warm-up
  return step


def _torch_step(cfg, batches):
  """The same for the eager PyTorch reference."""
  import torch
  import torch.nn.functional as F
  import torch_reference
  from omnidiff_jax.vocab import VocabLayout
  vocab = VocabLayout.from_config(cfg.vocab)
  model = torch_reference.random_qwen2(cfg.model).train()
  opt = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.learning_rate, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.0)

  box = {"i": 0}

  def step():
    batch = batches[box["i"] % len(batches)]
    box["i"] += 1
    ids, labels = torch.as_tensor(batch["input_ids"]).long(), torch.as_tensor(batch["labels"]).long()
    seg, pos = torch.as_tensor(batch["segment_ids"]), torch.as_tensor(batch["positions"]).long()
    thr = (1 - 1e-3) * torch.rand(ids.shape) + 1e-3
    thr = torch.where(labels == vocab.eos_id, 0.6 * thr, thr)
    masked = (labels != -100) & (torch.rand(ids.shape) <= thr)
    noisy = torch.where(masked, vocab.mask_id, ids)
    loss_labels = torch.where(masked, labels, -100)
    attn = torch_reference.segment_mask(seg)  # float additive: transformers' eager attention adds bool masks
    logits = model(input_ids=noisy, position_ids=pos, attention_mask=attn).logits.float()
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), loss_labels[:, 1:], ignore_index=-100, reduction="none")
    counts = (loss_labels[:, 1:] != -100).sum(1)
    loss = (ce.sum(1) / counts.clamp(min=1))[counts > 0].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss)

  torch.set_num_threads(os.cpu_count())
  step(), step()
  return step


def _interleaved_times(steps: dict, iters: int) -> dict:
  """Median seconds per step of each framework, timed in alternating rounds so both see the same load."""
  times = {name: [] for name in steps}
  for _ in range(iters):
    for name, step in steps.items():
      start = time.perf_counter()
      loss = step()
      times[name].append((time.perf_counter() - start, loss))
  return {name: (float(np.median([t for t, _ in v])), v[-1][1]) for name, v in times.items()}


def main(argv):
  del argv
  import jax
  import ml_collections
  from omnidiff_jax import flops
  from omnidiff_jax.data import synthetic
  from omnidiff_jax.training import config as train_config
  from omnidiff_jax.training.batch import TASKS
  from omnidiff_jax.training.metrics import peak_tflops_per_device

  cfg = train_config.add_training_sections(
      ml_collections.ConfigDict(_CONFIG.value.to_dict()), stage="bench", learning_rate=1e-4, mixture={t: 1.0 for t in TASKS}, steps=10**6,
      global_rows=_ROWS.value, seq_len=_SEQ.value, warmup_steps=0)
  cfg.data.min_len, cfg.data.max_len = 8, min(64, (_SEQ.value - 40) // 2)
  source = synthetic.make_source(cfg)
  batches = [next(source) for _ in range(_ITERS.value + 2)]  # both frameworks see the same batches
  tokens = _ROWS.value * _SEQ.value
  fpt = flops.flops_per_token(cfg.model, _SEQ.value)
  steps = {"jax (ours, jitted)": _jax_step(cfg, batches)}
  if _TORCH.value:
    import torch
    steps["torch (eager)"] = _torch_step(cfg, batches)
  results = _interleaved_times(steps, _ITERS.value)
  device = jax.devices()[0]
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device.device_kind}, "
        f"jax {jax.__version__}" + (f", torch {torch.__version__}" if _TORCH.value else ""))
  print(f"config: hidden {cfg.model.hidden_size}, layers {cfg.model.num_layers}, vocab {cfg.model.vocab_size}, "
        f"{cfg.model.dtype}; {_ROWS.value} rows x {_SEQ.value}; {fpt / 1e6:.1f} MFLOP/token (train, full attention)")
  peak = peak_tflops_per_device(0.0)
  for name, (t, loss) in results.items():
    tflops = tokens * fpt / t / 1e12 / (jax.device_count() if "jax" in name else 1)
    mfu = f", MFU {100 * tflops / peak:.1f} %" if peak and "jax" in name else ""
    print(f"{name:>20}: {t * 1e3:9.1f} ms/step, {tokens / t:10,.0f} tokens/s, {tflops * 1e3:8.1f} GFLOP/s/device"
          f"{mfu} (loss {loss:.3f})")
  if _TORCH.value:
    print(f"ratio (jax tokens/s / torch tokens/s): {results['torch (eager)'][0] / results['jax (ours, jitted)'][0]:.2f}x")


if __name__ == "__main__":
  with LoadGuard():
    app.run(main)
