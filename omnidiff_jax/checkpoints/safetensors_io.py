"""Reading and writing HF checkpoint directories (config.json + one or sharded *.safetensors + index).

Reading is lazy: only headers are parsed up front; tensors (or slices of them) are read on request, each
through a short-lived `safe_open` so that no file stays memory-mapped between reads. Every problem found
while opening a directory (missing config or shard, truncated file, key listed in the index but absent)
is collected in `HFCheckpoint.problems` instead of raised one at a time.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Iterable, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FLOAT_DTYPES = ("BF16", "F16", "F32")  # accepted safetensors dtypes for weights


class CheckpointError(ValueError):
  """A checkpoint cannot be converted; `problems` lists every reason found."""

  def __init__(self, source: str, problems: list[str]):
    self.problems = list(problems)
    super().__init__(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


class HFCheckpoint:
  """Lazy view of an HF checkpoint directory.

  Attributes:
    config: the parsed config.json ({} when missing or broken, with a problem recorded).
    problems: every problem found while opening the directory.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)
    self.problems: list[str] = []
    self.config = self._read_config()
    self._file_of: dict[str, pathlib.Path] = {}
    self._info: dict[str, tuple[str, tuple[int, ...]]] = {}  # key -> (safetensors dtype, shape)
    for path, listed_keys in self._shards().items():
      self._scan_shard(path, listed_keys)

  def _read_config(self) -> dict:
    path = self.directory / CONFIG_FILE
    if not path.is_file():
      self.problems.append(f"{path}: missing (the model config is needed to build the parameter tree)")
      return {}
    try:
      return json.loads(path.read_text())
    except json.JSONDecodeError as e:
      self.problems.append(f"{path}: not valid JSON ({e})")
      return {}

  def _shards(self) -> dict[pathlib.Path, list[str] | None]:
    """{shard path: keys the index assigns to it (None without an index)}."""
    index = self.directory / INDEX_FILE
    if index.is_file():
      try:
        weight_map = json.loads(index.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        self.problems.append(f"{index}: not a safetensors index with a 'weight_map' ({e!r})")
        return {}
      shards: dict[pathlib.Path, list[str]] = {}
      for key, name in weight_map.items():
        shards.setdefault(self.directory / name, []).append(key)
      return shards
    if (self.directory / SINGLE_FILE).is_file():
      return {self.directory / SINGLE_FILE: None}
    found = sorted(self.directory.glob("*.safetensors"))
    if not found:
      self.problems.append(f"{self.directory}: no {SINGLE_FILE}, {INDEX_FILE} or *.safetensors files")
    return {path: None for path in found}

  def _scan_shard(self, path: pathlib.Path, listed_keys: list[str] | None) -> None:
    if not path.is_file():
      self.problems.append(f"{path}: missing shard (listed in {INDEX_FILE} for {len(listed_keys or [])} tensors)")
      return
    try:
      with safe_open(str(path), framework="np") as f:
        keys = list(f.keys())
        for key in keys:
          sl = f.get_slice(key)
          self._info[key] = (sl.get_dtype(), tuple(sl.get_shape()))
          self._file_of[key] = path
    except SafetensorError as e:
      self.problems.append(f"{path}: unreadable or truncated safetensors file ({e})")
      return
    for key in sorted(set(listed_keys or ()) - set(keys)):
      self.problems.append(f"{path}: {INDEX_FILE} lists {key!r} but the file does not contain it")

  def keys(self) -> list[str]:
    return list(self._info)

  def __contains__(self, key: str) -> bool:
    return key in self._info

  def dtype(self, key: str) -> str:
    """safetensors dtype string, e.g. 'BF16'."""
    return self._info[key][0]

  def shape(self, key: str) -> tuple[int, ...]:
    return self._info[key][1]

  def nbytes(self, key: str) -> int:
    return int(np.prod(self.shape(key))) * np.dtype(np_dtype(self.dtype(key))).itemsize

  def read(self, key: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
    """The tensor (or the block `index` of it, one slice per axis) as a numpy array in its stored dtype."""
    with safe_open(str(self._file_of[key]), framework="np") as f:
      if index is None:
        return f.get_tensor(key)
      return f.get_slice(key)[index]

  def read_all(self) -> dict[str, np.ndarray]:
    """Every tensor, read fully in its stored dtype (small checkpoints: tests, round-trip checks)."""
    return {key: self.read(key) for key in self.keys()}


def np_dtype(safetensors_dtype: str) -> np.dtype:
  import ml_dtypes
  return {"BF16": np.dtype(ml_dtypes.bfloat16), "F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
          "F64": np.dtype(np.float64)}.get(safetensors_dtype, np.dtype(np.uint8))


def parse_size(size: str | int) -> int:
  """'5GB' / '500MB' / '2048' -> bytes (decimal units, as transformers' max_shard_size)."""
  if isinstance(size, int):
    return size
  units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
  s = size.strip().upper()
  for unit, factor in units.items():
    if s.endswith(unit):
      return int(float(s[:-len(unit)]) * factor)
  return int(s)


def plan_shards(sizes: Iterable[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
  """Groups keys (in order) into shards of at most max_shard_bytes (a bigger tensor gets its own shard)."""
  shards: list[list[str]] = [[]]
  used = 0
  for key, nbytes in sizes:
    if shards[-1] and used + nbytes > max_shard_bytes:
      shards.append([])
      used = 0
    shards[-1].append(key)
    used += nbytes
  return [s for s in shards if s]


def write_hf(directory: str | os.PathLike, shards: list[list[str]], tensors: Iterator[tuple[str, np.ndarray]],
             config: dict) -> None:
  """Writes an HF directory atomically: shard files, model.safetensors.index.json and config.json.

  `tensors` must yield the keys in the order of `shards` (flattened). At most one shard is held in memory.
  Everything is written to a sibling temporary directory that is renamed into place at the end, so an
  interrupted export never leaves a directory that looks complete.
  """
  directory = pathlib.Path(directory)
  if directory.exists():
    raise FileExistsError(f"{directory} already exists; remove it or choose another output directory")
  tmp = directory.with_name(directory.name + ".incomplete")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  n = len(shards)
  weight_map, total = {}, 0
  tensors = iter(tensors)
  for i, keys in enumerate(shards):
    name = SINGLE_FILE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
    block = {}
    for want in keys:
      key, value = next(tensors)
      if key != want:
        raise RuntimeError(f"tensor stream out of order: got {key!r}, expected {want!r}")
      block[key] = value
      weight_map[key] = name
      total += value.nbytes
    save_file(block, str(tmp / name), metadata={"format": "pt"})
    del block
  (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
  (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
  tmp.rename(directory)
