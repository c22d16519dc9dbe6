"""Batched vs batch-1 eval generation on a TRAINED model: how often the tokens match, and whether each mismatch
starts at a float near-tie (omnidiff_jax/eval/generate.py: batching changes the float rounding, never the inputs).

Runs a finished demo's eval (tools/demo.py; its eval config from <workdir>/steps/eval.json, its trained stage-3
checkpoint, its held-out prompts) through eval.generate.generate_samples three ways, each under
sampler.recording() so that every iteration's decisions are kept:
  batched         the sweep as the demo ran it (batch_size rows, prompts padded to prompt_bucket, on its mesh);
                  its tokens are checked against the demo's own records (<workdir>/eval/<task>/<setting>/)
  batch-1 padded  one prompt per batch, padded to the same bucket (isolates the batch shape)
  batch-1         one prompt per batch, unpadded (upstream's way; isolates, against the padded run, the padding)
For each sample whose batched and batch-1 tokens differ, the first iteration (of the row's own iterations with
candidates, so rows that wait for batch mates align) whose region differs, and there, from the batch-1 run's
trace, the decision that flipped and its gap:
  order  a position revealed in one run only: the relative gap |c_p - c_q| / max(|c_p|, |c_q|) between its
         confidence and that of the nearest candidate on the other side of the reveal (threshold decoding: also
         |p(x0) - threshold| / threshold)
  token  the same position revealed with different tokens: the relative gap of the top-2 probabilities,
         1 - p2 / p1 = 1 - exp(-(l1 - l2))
and the rounding noise there: the largest |c_batched - c_batch1| (relative) over the row's candidates. A gap below
--tie is reported as a near-tie. No timings (compiles of three batch shapes dominate); figures go to
bench/RESULTS.md ("Eval generation on the trained demo model").

  python bench/bench_eval_ties.py --workdir /tmp/omnidiff_demo --tasks asr,t2i
"""
import copy
import json
import os

import numpy as np
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/omnidiff_demo", "A finished tools/demo.py run (read only).")
_TASKS = flags.DEFINE_list("tasks", ["asr", "t2i"], "Benchmarks of the demo's eval to run.")
_SETTINGS = flags.DEFINE_list("settings", [], "Setting names to run (default: each task's settings).")
_TIE = flags.DEFINE_float("tie", 1e-3, "Relative gap below which a flipped decision counts as a near-tie.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 2, "Fake CPU devices, as tools/demo.py (its default 2).")


def _row_trace(trace, row: int) -> dict:
  """One row of a batch's sampler.Trace, restricted to the iterations where the row had candidates."""
  steps = np.nonzero(trace.candidates[:, row].any(-1))[0]
  return dict(region=trace.region[steps, row], window_start=trace.window_start[steps],
              **{k: getattr(trace, k)[steps, row] for k in ("candidates", "x0", "prob", "confidence", "margin")})


def request_traces(gen, requests, record, batch_size: int, prompt_bucket: int) -> dict[int, dict]:
  """{request index: its row trace}, from generate()'s batches in the order it runs them (gen.buckets)."""
  valid = [i for i, r in enumerate(requests) if r is not None]
  order = [[valid[i] for i in idx[s:s + batch_size]]
           for idx in gen.buckets([requests[i] for i in valid], prompt_bucket).values()
           for s in range(0, len(idx), batch_size)]
  assert len(order) == len(record), (len(order), len(record))
  return {index: _row_trace(trace, row) for chunk, trace in zip(order, record) for row, index in enumerate(chunk)}


def _max_noise(ref: dict, other: dict) -> tuple[float, float]:
  """The largest (relative, absolute) confidence difference over the candidates of the iterations both traces
  share (same region before them)."""
  worst = (0.0, 0.0)
  for k in range(min(len(ref["region"]), len(other["region"]))):
    cand = ref["candidates"][k]
    for x, y in zip(ref["confidence"][k][cand], other["confidence"][k][cand]):
      worst = (max(worst[0], _relative(x, y)), max(worst[1], float(abs(x - y))))
    if not np.array_equal(ref["region"][k], other["region"][k]):
      break
  return worst


def _relative(a, b) -> float:
  return float(abs(a - b) / max(abs(a), abs(b), 1e-30))


def first_divergence(ref: dict, other: dict, mask_id: int, threshold: float | None) -> dict:
  """Where two row traces of the same prompt first differ and the gap of the decision that flipped there."""
  steps = min(len(ref["region"]), len(other["region"]))
  diff = [k for k in range(steps) if not np.array_equal(ref["region"][k], other["region"][k])]
  if not diff:
    return dict(step=None, kind="iterations", gap=None, noise=None)
  k = diff[0]
  start = ref["window_start"][k]
  cand = ref["candidates"][k]
  window = slice(start, start + len(cand))
  shown = lambda trace: cand & (trace["region"][k][window] != mask_id)
  a, b = shown(ref), shown(other)
  conf = ref["confidence"][k]
  noise = max(_relative(x, y) for x, y in zip(conf[cand], other["confidence"][k][cand]))
  if (a != b).any():
    gaps = []
    for p in np.nonzero(a != b)[0]:
      opposite = cand & (a != a[p])
      gaps += [_relative(conf[p], conf[q]) for q in np.nonzero(opposite)[0]]
      if threshold is not None:
        gaps.append(abs(float(ref["prob"][k][p]) - threshold) / threshold)
    return dict(step=k, kind="order", gap=min(gaps), noise=noise)
  flipped = np.nonzero(a & (ref["x0"][k] != other["x0"][k]))[0]
  return dict(step=k, kind="token", gap=float(min(-np.expm1(-ref["margin"][k][flipped]))), noise=noise)


def decision_gaps(trace: dict, mask_id: int, threshold: float | None) -> list[float]:
  """The relative gap of every decision a row trace made (near-ties flip under rounding): per iteration, the
  reveal boundary (exact decoding: the k-th vs the (k+1)-th confidence; threshold decoding: each candidate's
  |p(x0) - threshold| / threshold) and, per revealed position, the top-2 probability gap 1 - p2 / p1."""
  gaps = []
  for k in range(len(trace["region"])):
    start, cand = trace["window_start"][k], trace["candidates"][k]
    shown = cand & (trace["region"][k][start:start + len(cand)] != mask_id)
    if threshold is not None:
      gaps += list(np.abs(trace["prob"][k][cand] - threshold) / threshold)
    elif 0 < shown.sum() < cand.sum():
      gaps.append(_relative(trace["confidence"][k][shown].min(), trace["confidence"][k][cand & ~shown].max()))
    gaps += list(-np.expm1(-trace["margin"][k][shown]))
  return gaps


def main(argv):
  del argv
  from omnidiff_jax.platform import use_fake_cpu_devices
  use_fake_cpu_devices(_CPU_DEVICES.value)
  import jax
  import ml_collections

  from omnidiff_jax import checkpoints, sharding
  from omnidiff_jax.demo import evaluators  # noqa: F401  registers the 'demo' kind
  from omnidiff_jax.eval import generate as gen
  from omnidiff_jax.eval import runner
  from omnidiff_jax.eval.evaluators import Context
  from omnidiff_jax.sampling import sampler
  from omnidiff_jax.vocab import VocabLayout, load_tokenizer

  with open(os.path.join(_WORKDIR.value, "steps", "eval.json")) as f:
    ev = ml_collections.ConfigDict(json.load(f)["config"])
  ev.benchmarks = ml_collections.ConfigDict({name: ev.benchmarks[name] for name in _TASKS.value})
  one = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))
  runs = {"batched": (sharding.make_mesh(ev.mesh), ev.batch_size, ev.prompt_bucket),
          "batch-1 padded": (sharding.make_mesh(one, jax.devices()[:1]), 1, ev.prompt_bucket),
          "batch-1": (sharding.make_mesh(one, jax.devices()[:1]), 1, 1)}
  contexts = {}
  for label, (mesh, _, _) in runs.items():
    model, model_cfg = checkpoints.load(ev.checkpoint, mesh=mesh)
    contexts[label] = Context(model, VocabLayout.from_config(model_cfg.vocab), load_tokenizer(ev.tokenizer),
                              ev.networks, ev.seed)
  vocab = contexts["batched"].vocab
  model_cfg = model_cfg.model
  print(f"load average at start: {os.getloadavg()[0]:.2f}")
  print(f"{ev.checkpoint}: {model_cfg.num_layers} layers x {model_cfg.hidden_size}, {model_cfg.dtype} compute; "
        f"batched = batch {ev.batch_size}, prompt bucket {ev.prompt_bucket}, mesh {dict(ev.mesh)} on "
        f"{len(jax.devices())} devices")
  for name in _TASKS.value:
    for setting in runner.check_settings(ev.benchmarks[name].settings):
      setting_name = runner.setting_name(setting)
      if _SETTINGS.value and setting_name not in _SETTINGS.value:
        continue
      tokens, traces = {}, {}
      for label, (mesh, batch_size, bucket) in runs.items():
        evaluator = runner.make_evaluators(ev, contexts[label])[name]
        samples = evaluator.samples()
        run_cfg = copy.deepcopy(ev)
        run_cfg.batch_size, run_cfg.prompt_bucket = batch_size, bucket
        with sampler.recording() as record:
          requests, _, filled, _ = gen.generate_samples(evaluator, contexts[label], mesh, samples, setting, run_cfg)
        tokens[label] = {i: t for i, (t, _) in filled.items()}
        traces[label] = request_traces(gen, requests, record, batch_size, bucket)
      with open(runner.Cell(name, setting_name, 0).path(os.path.join(_WORKDIR.value, "eval"), ".jsonl")) as f:
        recorded = {i: json.loads(line)["tokens"] for i, line in enumerate(f)}
      reproduced = all(list(tokens["batched"][i]) == recorded[i] for i in tokens["batched"])
      same = lambda x, y: [i for i in tokens[x] if np.array_equal(tokens[x][i], tokens[y][i])]
      matching = same("batched", "batch-1")
      positions = sum(len(t) for t in tokens["batched"].values())
      equal = sum(int((tokens["batched"][i] == tokens["batch-1"][i]).sum()) for i in tokens["batched"])
      n = len(tokens["batched"])
      print(f"\n{name}/{setting_name}: {n} samples (reproduce the demo's records: {reproduced}); identical tokens "
            f"batched vs batch-1 {len(matching)}/{n} samples, {equal}/{positions} positions; batched vs batch-1 "
            f"padded {len(same('batched', 'batch-1 padded'))}/{n} (batch shape); batch-1 padded vs batch-1 "
            f"{len(same('batch-1 padded', 'batch-1'))}/{n} (padding)")
      threshold = setting.get("threshold")
      gaps = np.concatenate([decision_gaps(t, vocab.mask_id, threshold) for t in traces["batch-1"].values()])
      print(f"  decisions of the batch-1 runs: {len(gaps)}, {int((gaps < _TIE.value).sum())} with a relative gap "
            f"below {_TIE.value:g}, of which {int((gaps == 0).sum())} exact ties (equal values: the first index wins "
            f"in both runs; smallest nonzero gap {gaps[gaps > 0].min():.2e})")
      noise = np.array([_max_noise(traces["batch-1"][i], traces["batched"][i]) for i in tokens["batched"]])
      print(f"  confidences batched vs batch-1 (until the first divergence): largest difference "
            f"{noise[:, 0].max():.2e} relative, {noise[:, 1].max():.2e} absolute; median over samples "
            f"{np.median(noise[:, 0]):.2e} relative")
      divergences = {i: first_divergence(traces["batch-1"][i], traces["batched"][i], vocab.mask_id, threshold)
                     for i in tokens["batched"]}
      diverged = [i for i, d in divergences.items() if d["step"] is not None]
      print(f"  trajectories (the region after every iteration) identical batched vs batch-1: "
            f"{n - len(diverged)}/{n} samples")
      for i in sorted(set(diverged) | (set(tokens["batched"]) - set(matching))):
        d = divergences[i]
        final = "final tokens differ" if i not in matching else "same final tokens"
        if d["step"] is None:
          print(f"  sample {samples[i].id}: {final}, same decisions, different iteration counts")
          continue
        verdict = "near-tie" if d["gap"] < _TIE.value else "NOT a near-tie"
        print(f"  sample {samples[i].id}: {final}; first divergence at its iteration {d['step']} ({d['kind']}): gap "
              f"{d['gap']:.2e}, rounding noise {d['noise']:.2e} -> {verdict}")
  print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  app.run(main)
