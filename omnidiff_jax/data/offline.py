"""Offline tokenization of raw records (manifest lines, TFDS examples) into ArrayRecord shards.

Input item k goes to shard k // records_per_shard, so shard contents do not depend on how many workers ran
or how often the job was restarted. A shard is skipped when its final file exists (resume); several workers
(`worker_index` of `num_workers`) split the shards round-robin. Each shard has a JSON report next to it
(`<shard>.report.json`: written, skipped samples with where + reason, tokens, over-long count), written
before the shard gets its final name; `summarize` merges them into `report.json`.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

from tqdm import tqdm

from omnidiff_jax.data import manifest as manifest_lib
from omnidiff_jax.data import records
from omnidiff_jax.data.encode import SampleEncoder
from omnidiff_jax.data.errors import BadInputPolicy, BadSample
from omnidiff_jax.data.interfaces import Record

# (where, () -> Record): one raw input item.
RawItem = tuple[str, Callable[[], Record]]


def manifest_items(path: str, media_root: str | None = None) -> list[RawItem]:
  """One item per non-blank manifest line; parsing (and its errors) happens when the item is made."""
  return [(f"{path}:{n}", lambda n=n, line=line: manifest_lib.parse_line(path, n, line, media_root))
          for n, line in enumerate(manifest_lib.read_lines(path), start=1) if line.strip()]


def tfds_items(name: str, split: str, adapter_name: str, data_dir: str | None = None) -> list[RawItem]:
  from omnidiff_jax.data import tfds_source  # tensorflow_datasets is optional
  source, adapt = tfds_source.data_source(name, split, data_dir), tfds_source.adapter(adapter_name)
  return [(f"tfds:{name}/{split}[{i}]", lambda i=i, w=f"tfds:{name}/{split}[{i}]": adapt(source[i], w))
          for i in range(len(source))]


def _tokenize_shard(items: Sequence[RawItem], encoder: SampleEncoder, policy: BadInputPolicy, batch_size: int,
                    max_len: int, progress) -> tuple[list, dict]:
  samples, tokens, overlong = [], 0, []
  for start in range(0, len(items), batch_size):
    chunk = items[start:start + batch_size]
    recs, wheres = [], []
    for where, make in chunk:
      try:
        recs.append(make())
        wheres.append(where)
      except BadSample as e:
        policy.handle(where, e)
    for where, result in zip(wheres, encoder.encode_batch(recs)):
      if isinstance(result, BadSample):
        policy.handle(where, result)
        continue
      samples.append(result)
      tokens += len(result["input_ids"])
      if max_len and len(result["input_ids"]) > max_len:
        overlong.append(where)  # kept: the pipeline drops it per its seq_len; listed in the report
    progress.update(len(chunk))
  return samples, {"tokens": tokens, "overlong": overlong}


def tokenize(items: Sequence[RawItem], out_dir: str, encoder: SampleEncoder, *, on_error: str = "skip",
             prefix: str = "data", records_per_shard: int = 10_000, batch_size: int = 32, max_len: int = 3072,
             worker_index: int = 0, num_workers: int = 1) -> dict:
  """Tokenizes `items` into `<out_dir>/<prefix>-NNNNN.array_record` shards; returns the merged report.

  on_error='error' stops at the first bad sample (BadInputError naming file and line); 'skip' records it in
  the shard's report. Samples longer than max_len are kept and listed (the pipeline drops them per seq_len).
  """
  os.makedirs(out_dir, exist_ok=True)
  num_shards = max(1, -(-len(items) // records_per_shard))
  mine = [s for s in range(num_shards) if s % num_workers == worker_index]
  todo = [s for s in mine if not os.path.exists(records.shard_path(out_dir, prefix, s))]
  total = sum(len(items[s * records_per_shard:(s + 1) * records_per_shard]) for s in todo)
  with tqdm(total=total, desc=f"tokenizing {len(todo)}/{len(mine)} shards", unit="rec") as progress:
    for s in todo:
      policy = BadInputPolicy(on_error)
      path = records.shard_path(out_dir, prefix, s)
      shard_items = items[s * records_per_shard:(s + 1) * records_per_shard]
      samples, info = _tokenize_shard(shard_items, encoder, policy, batch_size, max_len, progress)
      report = {"shard": os.path.basename(path), "inputs": len(shard_items), "written": len(samples),
                **info, **policy.report()}
      with open(path + ".report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
      records.write_shard(path, samples)
  return summarize(out_dir, prefix)


def summarize(out_dir: str, prefix: str = "data") -> dict:
  """Merges the shard reports of completed shards into `<out_dir>/report.json` and returns it."""
  merged = {"shards": 0, "inputs": 0, "written": 0, "tokens": 0, "skipped": 0, "by_reason": {}, "errors": [],
            "overlong": []}
  for path in sorted(p for p in os.listdir(out_dir) if p.startswith(prefix) and p.endswith(records.SHARD_SUFFIX)):
    with open(os.path.join(out_dir, path + ".report.json"), encoding="utf-8") as f:
      shard = json.load(f)
    merged["shards"] += 1
    for key in ("inputs", "written", "tokens", "skipped"):
      merged[key] += shard[key]
    for reason, count in shard["by_reason"].items():
      merged["by_reason"][reason] = merged["by_reason"].get(reason, 0) + count
    merged["errors"] += shard["examples"]
    merged["overlong"] += shard["overlong"]
  with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(merged, f, indent=1)
  return merged
