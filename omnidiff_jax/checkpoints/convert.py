"""Checkpoint conversions: HF safetensors -> Orbax, Orbax -> HF safetensors, Dream -> Omni vocabulary.

All three stream one parameter at a time (one layer-stacked parameter of our tree, or one HF tensor of
the extra weights), so host memory stays near the size of the largest stacked parameter whatever the
model size. Inputs are checked before anything is written; every problem found is reported in one
CheckpointError.
"""
from __future__ import annotations

import copy
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from omnidiff_jax import config as cfglib
from omnidiff_jax.checkpoints import orbax_io
from omnidiff_jax.models.dream import params as hf_names
from omnidiff_jax.models.speech_in import params as speech_in
from omnidiff_jax.checkpoints.safetensors_io import (FLOAT_DTYPES, CheckpointError, HFCheckpoint, np_dtype,
                                                     parse_size, plan_shards, write_hf)
from omnidiff_jax.vocab import VocabLayout, verify_tokenizer

PROJECTOR, PROJECTOR_PREFIX = "audio_projection", "model.audio_projection."  # ours (params/...), Omni's HF names
# Vocabulary layouts recognised from config.json's vocab_size (same numbers as configs/dream_7b.py and
# configs/omni_7b.py); other sizes need an explicit vocab config.
KNOWN_VOCABS = {
    152_064: dict(text_size=151_667, num_specials=0, num_audio_codes=0, num_image_codes=0, size=152_064),
    176_264: dict(text_size=151_667, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=16_384,
                  num_image_codes=8_192, size=176_264),
}
_HF_FIELDS = dict(hidden_size="hidden_size", num_layers="num_hidden_layers", num_heads="num_attention_heads",
                  num_kv_heads="num_key_value_heads", intermediate_size="intermediate_size",
                  vocab_size="vocab_size")


def model_config_from_hf(hf_config: dict, problems: list[str]) -> ml_collections.ConfigDict | None:
  """Our model section from an HF Qwen2/Dream config.json; appends problems instead of raising."""
  missing = [f for f in _HF_FIELDS.values() if f not in hf_config]
  if missing:
    problems.append(f"config.json: missing field(s) {missing}")
    return None
  if hf_config.get("tie_word_embeddings", False):
    problems.append("config.json: tie_word_embeddings=true; Dream/Omni checkpoints have a separate lm_head")
  if hf_config.get("hidden_act", "silu") != "silu":
    problems.append(f"config.json: hidden_act={hf_config['hidden_act']!r}, expected 'silu'")
  args = {ours: int(hf_config[theirs]) for ours, theirs in _HF_FIELDS.items()}
  head_dim = hf_config.get("head_dim") or args["hidden_size"] // args["num_heads"]
  try:
    return cfglib.model_config(head_dim=int(head_dim), rope_theta=float(hf_config.get("rope_theta", 1e6)),
                               rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)), **args)
  except ValueError as e:
    problems.append(f"config.json: {e}")
    return None


def hf_config_from(cfg: ml_collections.ConfigDict, source: dict | None, dtype: str) -> dict:
  """config.json for an export: the source's config.json with vocab/dtype updated, else a Qwen2 config."""
  m = cfg.model
  out = copy.deepcopy(source) if source else {
      "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
      "tie_word_embeddings": False, "initializer_range": m.initializer_range, "max_position_embeddings": 131072,
      "attention_dropout": 0.0, "use_sliding_window": False}
  out.update({theirs: int(m[ours]) for ours, theirs in _HF_FIELDS.items()})
  out.update(head_dim=int(m.head_dim), rope_theta=float(m.rope_theta), rms_norm_eps=float(m.rms_norm_eps))
  out["torch_dtype"] = dtype
  if "dtype" in out:  # transformers >= 5 writes 'dtype'
    out["dtype"] = dtype
  return out


def _check_tensor(ckpt: HFCheckpoint, key: str, shape: tuple[int, ...] | None, problems: list[str]) -> None:
  if key not in ckpt:
    problems.append(f"missing tensor {key!r}" + (f" (expected shape {list(shape)})" if shape else ""))
    return
  if shape is not None and ckpt.shape(key) != shape:
    problems.append(f"{key}: shape {list(ckpt.shape(key))}, expected {list(shape)}")
  if ckpt.dtype(key) not in FLOAT_DTYPES:
    problems.append(f"{key}: dtype {ckpt.dtype(key)}, expected one of {list(FLOAT_DTYPES)}")


def _read_block(ckpt: HFCheckpoint, name: hf_names.ParamName, index: tuple[slice, ...], num_layers: int,
                dtype: np.dtype, chunk_bytes: int = 64 << 20) -> np.ndarray:
  """Block `index` (unit-step slices, our layout) of our parameter `name`, cast to `dtype`.

  The HF tensors are read `chunk_bytes` of rows at a time straight into the output, so reading adds
  only about one chunk (plus its short-lived memory map) on top of the block itself.
  """
  keys = hf_names.hf_keys(name, num_layers)
  layers = range(*index[0].indices(num_layers)) if name.per_layer else [0]
  inner = index[1:] if name.per_layer else index
  hf_index = tuple(reversed(inner)) if name.transpose else tuple(inner)
  hf_ranges = [range(*s.indices(n)) for s, n in zip(hf_index, ckpt.shape(keys[0]))]
  block_shape = tuple(len(r) for r in hf_ranges)
  out = np.empty((len(layers), *(block_shape[::-1] if name.transpose else block_shape)), dtype)
  rows = hf_ranges[0]
  row_bytes = int(np.prod(block_shape[1:])) * max(out.itemsize, 4)
  step = max(1, chunk_bytes // row_bytes)
  for j, layer in enumerate(layers):
    for r in range(0, len(rows), step):
      n = min(step, len(rows) - r)
      part = ckpt.read(keys[layer], (slice(rows.start + r, rows.start + r + n), *hf_index[1:]))
      if name.transpose:
        hf_names.transpose_2d(part, out[j][:, r:r + n])
      else:
        out[j][r:r + n] = part
  return out if name.per_layer else out[0]


def _projector_config(ckpt: HFCheckpoint, model_cfg: ml_collections.ConfigDict, problems: list[str]):
  """model.audio_projector for an Omni checkpoint's projector (`model.audio_projection.*`): input width from its
  LayerNorm, output = the backbone width, parameters in the stored dtype (compute: the model's)."""
  width_key = PROJECTOR_PREFIX + "pre_proj_layernorm.weight"
  if width_key not in ckpt:
    problems.append(f"{PROJECTOR_PREFIX}* tensors without {width_key!r}: not an Omni audio projector")
    return None
  given, width = model_cfg.get("audio_projector") or {}, ckpt.shape(width_key)[0]
  if given.get("input_size", width) != width:
    problems.append(f"{width_key}: projector input width {width}, the given config has model.audio_projector."
                    f"input_size={given['input_size']}")
  return ml_collections.ConfigDict(dict(input_size=width, hidden_size=model_cfg.hidden_size,
                                        dtype=given.get("dtype", model_cfg.dtype),
                                        param_dtype=np_dtype(ckpt.dtype(width_key)).name))


def _read_padded(ckpt: HFCheckpoint, name: hf_names.ParamName, index: tuple[slice, ...], shape: tuple[int, ...],
                 model_cfg: ml_collections.ConfigDict, dtype: np.dtype) -> np.ndarray:
  """_read_block of our parameter of (vocab-padded) `shape`: the vocabulary rows past model.vocab_size (the
  padding, absent from the HF tensors) are zeros."""
  index = tuple(slice(*s.indices(n)) for s, n in zip(index, shape))
  rows = None if name.vocab_axis is None else index[name.vocab_axis]
  if rows is None or rows.stop <= model_cfg.vocab_size:
    return _read_block(ckpt, name, index, model_cfg.num_layers, dtype)
  out = np.zeros([s.stop - s.start for s in index], dtype)
  real = slice(rows.start, max(rows.start, model_cfg.vocab_size))
  if real.stop > real.start:
    part = (slice(None),) * name.vocab_axis + (slice(0, real.stop - real.start),)
    out[part] = _read_block(ckpt, name, index[:name.vocab_axis] + (real,) + index[name.vocab_axis + 1:],
                            model_cfg.num_layers, dtype)
  return out


def _validate(ckpt: HFCheckpoint, config: ml_collections.ConfigDict | None, mesh: jax.sharding.Mesh | None):
  """Checks an HF checkpoint against the model it describes (and `config`, when given).

  Returns (model config, vocab config, {our param path: abstract array (sharded over `mesh`)}, {projector param
  path: array} (empty without one), extra HF keys). Raises CheckpointError with every problem found.
  """
  problems = list(ckpt.problems)
  model_cfg = model_config_from_hf(ckpt.config, problems) if ckpt.config else None
  vocab = None if config is None else config.vocab
  if model_cfg is not None and config is not None:
    for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                  "vocab_size"):
      if config.model[field] != model_cfg[field]:
        problems.append(f"config.json: {_HF_FIELDS.get(field, field)}={model_cfg[field]} but the given config "
                        f"has model.{field}={config.model[field]}")
    model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  abstract, projector = {}, {}
  extra_keys = [k for k in ckpt.keys() if hf_names.is_extra(k) and not k.startswith(PROJECTOR_PREFIX)]
  projector_keys = [k for k in ckpt.keys() if k.startswith(PROJECTOR_PREFIX)]
  if model_cfg is not None:
    model_cfg.audio_projector = _projector_config(ckpt, model_cfg, problems) if projector_keys else None
    if vocab is None and model_cfg.vocab_size in KNOWN_VOCABS:
      vocab = cfglib.vocab_config(**KNOWN_VOCABS[model_cfg.vocab_size])
    if vocab is None:
      problems.append(f"config.json: vocab_size {model_cfg.vocab_size} is neither Dream (152064) nor Omni "
                      f"(176264); pass the vocab layout explicitly (--config)")
    elif vocab.size != model_cfg.vocab_size:
      problems.append(f"vocabulary mismatch: the vocab layout has {vocab.size} rows, config.json has "
                      f"vocab_size {model_cfg.vocab_size}")
    elif any((ckpt.directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
      try:
        verify_tokenizer(VocabLayout.from_config(vocab), ckpt.directory)
      except ValueError as e:
        problems.append(str(e))
    abstract = dict(nnx.to_flat_state(orbax_io.abstract_model(model_cfg, mesh)[1]))
    expected = set()
    for name in hf_names.backbone_names():
      shape = hf_names.hf_shape(name, abstract[name.path].shape, model_cfg.vocab_size)
      for key in hf_names.hf_keys(name, model_cfg.num_layers):
        expected.add(key)
        _check_tensor(ckpt, key, shape, problems)
    for key in extra_keys:
      _check_tensor(ckpt, key, None, problems)
    if model_cfg.audio_projector is not None:  # small: read now, so that a mismatch is reported before writing
      targets = {p[1:]: a.shape for p, a in abstract.items() if p[0] == PROJECTOR}
      try:
        projector = speech_in.convert(speech_in.projector_entries(), {
            k[len(PROJECTOR_PREFIX):]: ckpt.read(k) for k in projector_keys}, targets, what="audio projector")
      except speech_in.CheckpointMismatchError as e:
        problems.append(str(e))
    for key in sorted(set(ckpt.keys()) - expected - set(extra_keys) - set(projector_keys)):
      problems.append(f"unexpected tensor {key!r} (not a Dream/Qwen2 backbone key nor an Omni extra weight)")
  if problems:
    raise CheckpointError(f"cannot convert {ckpt.directory}", problems)
  return model_cfg, vocab, abstract, projector, extra_keys


def hf_to_orbax(hf_dir: str | os.PathLike, out: str | os.PathLike, *,
                config: ml_collections.ConfigDict | None = None, dtype: str | None = None,
                mesh: jax.sharding.Mesh | None = None, step: int = 0, progress: bool = True) -> dict:
  """Converts an HF Dream / Omni-Diffusion directory into an Orbax checkpoint at '<out>/<step>'.

  An Omni audio projector (`model.audio_projection.*`) becomes params/audio_projection (model.audio_projector
  set: checkpoints.load gives a model with it); the other Omni weights (the frozen SenseVoice encoder
  `model.audio_model.*`) are carried through under 'extra' by HF name (checkpoints.load_extra).

  Args:
    hf_dir: directory with config.json and model.safetensors or sharded *.safetensors + index.
    out: checkpoint root (created); load it with omnidiff_jax.checkpoints.load(out).
    config: a full config (e.g. configs/omni_7b.py) whose vocab section and model settings (compute
      dtype, remat policy, attention kernel) are stored; its model shape must match config.json. None
      builds the model section from config.json (compute dtype = stored dtype) and infers the vocab
      layout from vocab_size (152,064 Dream, 176,264 Omni).
    dtype: parameter dtype to store, e.g. 'bfloat16'; None keeps each tensor's stored dtype (the model
      config then gets the embedding's dtype), which makes HF -> Orbax -> HF byte-identical.
    mesh: shard every parameter over this mesh while converting; each device's block is read straight
      from the safetensors files, so no host ever builds a full replica of a sharded parameter.
  Returns:
    {'config': the stored config dict, 'extra_keys': the carried-through HF keys under 'extra'}.
  Raises:
    CheckpointError listing every problem (files, config, missing/unexpected/mis-shaped/mis-typed tensors,
    vocabulary mismatch, tokenizer.json / tokenizer_config.json in hf_dir disagreeing with the vocab
    layout) before anything is written.
  """
  ckpt = HFCheckpoint(hf_dir)
  model_cfg, vocab, abstract, projector, extra_keys = _validate(ckpt, config, mesh)
  names = hf_names.backbone_names()
  store_dtype = {name.path: np.dtype(jnp.dtype(dtype)) if dtype else
                 np_dtype(ckpt.dtype(hf_names.hf_keys(name, model_cfg.num_layers)[0])) for name in names}
  model_cfg.param_dtype = store_dtype[("embed_tokens", "embedding")].name
  if config is None:
    model_cfg.dtype = model_cfg.param_dtype
  if projector:
    model_cfg.audio_projector.param_dtype = jnp.dtype(dtype).name if dtype else model_cfg.audio_projector.param_dtype
    if config is None:
      model_cfg.audio_projector.dtype = model_cfg.dtype
  config = ml_collections.ConfigDict(dict(vocab=vocab, model=model_cfg))
  metadata = dict(format=orbax_io.FORMAT, config=config.to_dict(), hf_config=ckpt.config, extra_keys=extra_keys)
  total = sum(ckpt.nbytes(k) for k in ckpt.keys())
  bar = tqdm(total=total, unit="B", unit_scale=True, desc="hf-to-orbax", disable=not progress)

  def arrays() -> Iterator[tuple[tuple[str, ...], object]]:
    for name in names:
      shape, dt = abstract[name.path].shape, store_dtype[name.path]
      read = lambda index, name=name, dt=dt: _read_padded(ckpt, name, index, shape, model_cfg, dt)
      if mesh is None:  # plain host arrays: no copy into a device buffer
        array = read(tuple(slice(0, n) for n in shape))
      else:  # each device's block is read on its own
        array = jax.make_array_from_callback(shape, abstract[name.path].sharding, read)
      yield ("params", *name.path), array
      bar.update(sum(ckpt.nbytes(k) for k in hf_names.hf_keys(name, model_cfg.num_layers)))
    for path, value in projector.items():
      value = value.astype(jnp.dtype(model_cfg.audio_projector.param_dtype))
      yield ("params", PROJECTOR, *path), (value if mesh is None else jax.make_array_from_callback(
          value.shape, abstract[(PROJECTOR, *path)].sharding, lambda index, value=value: value[index]))
      bar.update(value.nbytes)
    for key in extra_keys:
      value = ckpt.read(key)
      yield ("extra", *key.split(".")), value if dtype is None else value.astype(jnp.dtype(dtype))
      bar.update(ckpt.nbytes(key))

  orbax_io.write(os.path.join(out, str(step)), arrays(), metadata)
  bar.close()
  return dict(config=config.to_dict(), extra_keys=extra_keys)


def _restore_numpy(path, tree_path: tuple[str, ...], shape, dtype) -> np.ndarray:
  target = orbax_io.nested(tree_path, jax.ShapeDtypeStruct(shape, dtype))
  out = orbax_io.restore(path, target)
  for key in tree_path:
    out = out[key]
  return np.asarray(out)


def orbax_to_hf(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike, *, max_shard_size: str | int = "5GB",
                dtype: str | None = None, progress: bool = True) -> list[str]:
  """Exports a converted or training checkpoint to an HF directory (sharded safetensors + index + config.json).

  Backbone tensors get the HF Qwen2/Dream names; extra Omni weights keep the names they came with; a trained
  audio projector (params/audio_projection) gets Omni's names 'model.audio_projection.*' (the optimizer state
  of a training checkpoint is not exported, nor is the frozen SenseVoice encoder, which training does not
  hold: take it from the source checkpoint). dtype None keeps the stored dtypes (HF -> Orbax -> HF is then
  byte-identical). The output appears atomically (written to '<out_dir>.incomplete', renamed at the end).
  Returns the HF keys written.
  """
  meta = orbax_io.read_metadata(ckpt_path)
  cfg = ml_collections.ConfigDict(meta["config"])
  shapes = orbax_io.array_shapes(ckpt_path)
  num_layers = cfg.model.num_layers
  out_dtype = (lambda dt: np.dtype(jnp.dtype(dtype))) if dtype else (lambda dt: dt)
  plan, sources = [], []  # (hf key, nbytes); (tree path, hf_names.ParamName or None)
  for name in hf_names.backbone_names():
    shape, dt = shapes[("params", *name.path)]
    per_key = int(np.prod(hf_names.hf_shape(name, shape, cfg.model.vocab_size))) * out_dtype(dt).itemsize
    plan += [(k, per_key) for k in hf_names.hf_keys(name, num_layers)]
    sources.append((("params", *name.path), name))
  for path, (shape, dt) in shapes.items():
    if path[0] == "extra":
      plan.append((".".join(path[1:]), int(np.prod(shape)) * out_dtype(dt).itemsize))
      sources.append((path, None))
  projector_paths = [p for p in shapes if p[:2] == ("params", "audio_projection")]
  projector = speech_in.projector_to_hf({p[2:]: _restore_numpy(ckpt_path, p, *shapes[p])
                                         for p in projector_paths}) if projector_paths else {}  # small
  plan += [(key, value.size * out_dtype(value.dtype).itemsize) for key, value in projector.items()]
  shards = plan_shards(plan, parse_size(max_shard_size))
  bar = tqdm(total=sum(n for _, n in plan), unit="B", unit_scale=True, desc="orbax-to-hf", disable=not progress)

  def tensors() -> Iterator[tuple[str, np.ndarray]]:
    for path, name in sources:
      shape, dt = shapes[path]
      value = _restore_numpy(ckpt_path, path, shape, dt)
      if name:  # HF files keep vocab_size rows: the padding is cut
        pieces = hf_names.to_hf(name, hf_names.vocab_rows(name, value, cfg.model.vocab_size), num_layers)
      else:
        pieces = [(".".join(path[1:]), value)]
      for key, piece in pieces:
        piece = piece.astype(out_dtype(piece.dtype), copy=False)
        bar.update(piece.nbytes)
        yield key, piece
      del value
    for key, value in projector.items():
      value = value.astype(out_dtype(value.dtype), copy=False)
      bar.update(value.nbytes)
      yield key, value

  first_dtype = out_dtype(shapes[("params", "embed_tokens", "embedding")][1]).name
  write_hf(out_dir, shards, tensors(), hf_config_from(cfg, meta.get("hf_config"), first_dtype))
  bar.close()
  return [k for k, _ in plan]


def expand_vocab(src: str | os.PathLike, out: str | os.PathLike, *, vocab: ml_collections.ConfigDict | None = None,
                 seed: int = 0, std: float = 0.02, step: int = 0, progress: bool = True) -> None:
  """Grows the embedding and lm_head of a checkpoint to a larger vocabulary (Dream 152,064 -> Omni 176,264).

  Existing rows are copied unchanged; rows >= the old size are drawn from N(0, std) with `seed` (embedding
  rows first, then lm_head rows, each in HF (rows, hidden) order), as transformers' resize with
  mean_resizing=False does (reference section 2.2). vocab: the target layout (default: Omni 176,264); its
  text ids must match the source's.
  """
  meta = orbax_io.read_metadata(src)
  if meta.get("source") == "training":
    raise CheckpointError(f"cannot expand {src}", ["it is a training checkpoint; expand the converted checkpoint "
                                                   "the run started from"])
  cfg = ml_collections.ConfigDict(meta["config"])
  vocab = vocab if vocab is not None else cfglib.vocab_config(**KNOWN_VOCABS[176_264])
  old, new = cfg.model.vocab_size, vocab.size
  problems = []
  if new < old:
    problems.append(f"target vocabulary has {new} rows, fewer than the checkpoint's {old}")
  if vocab.text_size != cfg.vocab.text_size:
    problems.append(f"text vocabulary differs: target text_size {vocab.text_size}, checkpoint {cfg.vocab.text_size}")
  if problems:
    raise CheckpointError(f"cannot expand {src}", problems)
  rng = np.random.default_rng(seed)
  hidden = cfg.model.hidden_size
  new_embed = rng.normal(0.0, std, (new - old, hidden))
  new_head = rng.normal(0.0, std, (new - old, hidden))
  shapes = orbax_io.array_shapes(src)
  cfg.vocab = vocab
  cfg.model.vocab_size = new
  rows = cfglib.padded_vocab_size(cfg.model)
  meta = dict(meta, config=cfg.to_dict())
  if meta.get("hf_config"):
    meta["hf_config"] = dict(meta["hf_config"], vocab_size=new)

  def arrays():
    for path, (shape, dt) in tqdm(shapes.items(), desc="expand-vocab", disable=not progress):
      value = _restore_numpy(src, path, shape, dt)
      if path == ("params", "embed_tokens", "embedding"):  # the old padding rows are dropped, the new added
        value = np.concatenate([value[:old], new_embed.astype(dt), np.zeros((rows - new, hidden), dt)], axis=0)
      elif path == ("params", "lm_head", "kernel"):
        value = np.concatenate([value[:, :old], new_head.T.astype(dt), np.zeros((hidden, rows - new), dt)], axis=1)
      yield path, value

  orbax_io.write(os.path.join(out, str(step)), arrays(), meta)
