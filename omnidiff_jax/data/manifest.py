"""Upstream JSONL manifests (reference section 3.4) -> validated `Record`s.

One JSON object per line:

  {"messages": [{"role": "user", "content": "Convert the speech to text.\\n<|audio|>"},
                {"role": "assistant", "content": "hello world"}],
   "audios": ["wavs/a.wav"],                      # one entry per <|audio|>, in order
   "images": [],                                  # one entry per <|image|>, in order
   "task": "asr"}                                 # optional, else inferred (see infer_task; an error if
                                                  # no single task fits)

A media entry is a path (relative paths are resolved against `media_root`, by default the manifest's
directory) or an object with any of:
  "path":     the media file (audio: anything libsndfile reads; image: anything PIL reads)
  "codes":    precomputed codes, an inline int list or a .npy / .json file: MAGVIT-v2 codes for images
              (256 for an assistant image, 1024 for a user image), GLM-4-Voice codes for assistant speech
  "features": precomputed user-speech features, a .npy file of shape (T, D) (one row per feature slot)
Precomputed codes / features are used as they are; otherwise the media file goes through the tokenizer.

Validation here is structural (JSON, roles, empty text, placeholder counts, media entry shape); media
files and codes are checked when the sample is encoded (omnidiff_jax.data.encode).
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from omnidiff_jax import tasks
from omnidiff_jax.data.errors import BadInputPolicy, BadSample
from omnidiff_jax.data.interfaces import (AUDIO_PLACEHOLDER, IMAGE_PLACEHOLDER, ROLES, TASKS, MediaItem,
                                          Record)

MEDIA_KEYS = ("path", "codes", "features")
RECORD_KEYS = ("messages", "audios", "images", "task", "id")


def infer_task(messages: list[dict[str, str]], images: list[MediaItem], audios: list[MediaItem]) -> str:
  """The one registered task (omnidiff_jax.tasks) whose media match the line's (user turn / reply media, from
  the placeholders' roles) and whose user template's fixed text (e.g. 'Convert the speech to text.') the
  first user turn holds, as upstream tags tasks by their prompt strings. Raises BadSample if none or several do."""
  def media(role: str) -> frozenset[str]:
    return frozenset(kind for kind, items in (("image", images), ("audio", audios))
                     if any(item.role == role for item in items))

  signature = (media("user"), media("assistant"))
  first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
  same_media = [spec for spec in tasks.specs() if spec.media() == signature]
  matches = [spec.name for spec in same_media if spec.prompt_matches(first_user)]
  if len(matches) == 1:
    return matches[0]
  described = f"user media {sorted(signature[0])}, reply media {sorted(signature[1])}"
  if not same_media:
    problem = f"no task has {described}"
  elif not matches:
    problem = (f"{described} fit {[s.name for s in same_media]}, but the user turn lacks their prompt text "
               f"({'; '.join(repr(s.chat[1]) for s in same_media)})")
  else:
    problem = f"{described} and the user turn fit several tasks {matches}"
  raise BadSample(f"cannot infer the task: {problem}; add \"task\": one of {tasks.names()}")


def _media_item(entry, kind: str, index: int, media_root: str) -> MediaItem:
  def resolve(p):
    if not isinstance(p, str) or not p:
      raise BadSample(f"{kind}[{index}]: a path must be a non-empty string, got {p!r}")
    return p if os.path.isabs(p) else os.path.join(media_root, p)

  if isinstance(entry, str):
    return MediaItem(path=resolve(entry))
  if not isinstance(entry, dict):
    raise BadSample(f"{kind}[{index}]: expected a path or an object, got {type(entry).__name__}")
  unknown = set(entry) - set(MEDIA_KEYS)
  if unknown or not entry:
    raise BadSample(f"{kind}[{index}]: keys must be among {MEDIA_KEYS}, got {sorted(entry)}")
  if "features" in entry and kind == "images":
    raise BadSample(f"{kind}[{index}]: images take 'codes', not 'features'")
  codes = entry.get("codes")
  if isinstance(codes, str):
    codes = resolve(codes)
  elif codes is not None and not (isinstance(codes, list) and all(isinstance(c, int) for c in codes)):
    raise BadSample(f"{kind}[{index}]: 'codes' must be a list of ints or a .npy/.json path")
  features = resolve(entry["features"]) if "features" in entry else None
  path = resolve(entry["path"]) if "path" in entry else None
  return MediaItem(path=path, codes=codes, features=features)


def _assign_roles(messages, items: list[MediaItem], placeholder: str, kind: str) -> None:
  roles = [m["role"] for m in messages for _ in range(m["content"].count(placeholder))]
  if len(roles) != len(items):
    raise BadSample(f"{len(roles)} {placeholder} placeholder(s) in the messages but {len(items)} {kind}")
  for item, role in zip(items, roles):
    item.role = "assistant" if role == "assistant" else "user"


def parse_record(obj, where: str, media_root: str) -> Record:
  """A decoded JSON line -> Record; raises BadSample on any structural problem."""
  if not isinstance(obj, dict):
    raise BadSample(f"expected a JSON object, got {type(obj).__name__}")
  unknown = set(obj) - set(RECORD_KEYS)
  if unknown:
    raise BadSample(f"unknown keys {sorted(unknown)}; expected some of {RECORD_KEYS}")
  messages = obj.get("messages")
  if not isinstance(messages, list) or not messages:
    raise BadSample("'messages' must be a non-empty list")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or set(m) != {"role", "content"}:
      raise BadSample(f"messages[{i}] must be an object with exactly 'role' and 'content'")
    if m["role"] not in ROLES:
      raise BadSample(f"messages[{i}]: role {m['role']!r} is not one of {ROLES}")
    if not isinstance(m["content"], str) or not m["content"].strip():
      raise BadSample(f"messages[{i}] ({m['role']}): empty text")
  if not any(m["role"] == "assistant" for m in messages):
    raise BadSample("no assistant turn (nothing to train on)")
  media = {}
  for kind in ("audios", "images"):
    entries = obj.get(kind, [])
    if not isinstance(entries, list):
      raise BadSample(f"'{kind}' must be a list")
    media[kind] = [_media_item(e, kind, i, media_root) for i, e in enumerate(entries)]
  _assign_roles(messages, media["audios"], AUDIO_PLACEHOLDER, "audios")
  _assign_roles(messages, media["images"], IMAGE_PLACEHOLDER, "images")
  task = obj.get("task") or infer_task(messages, media["images"], media["audios"])
  if task not in TASKS:
    raise BadSample(f"task {task!r} is not one of {TASKS}")
  return Record(messages=messages, images=media["images"], audios=media["audios"], task=task, where=where)


def read_lines(path: str) -> list[str]:
  """All lines of a manifest (kept as text; parsed lazily so random access stays cheap)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"manifest {path!r} not found")
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def parse_line(path: str, line_number: int, line: str, media_root: str | None = None) -> Record:
  """Line `line_number` (1-based) of manifest `path` -> Record; raises BadSample."""
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise BadSample(f"invalid JSON ({e.msg} at column {e.colno})") from e
  return parse_record(obj, f"{path}:{line_number}", media_root or os.path.dirname(os.path.abspath(path)))


def iter_records(path: str, policy: BadInputPolicy, media_root: str | None = None) -> Iterator[Record]:
  """Valid records of a manifest, in order; blank lines are ignored, bad ones go to `policy`."""
  for number, line in enumerate(read_lines(path), start=1):
    if not line.strip():
      continue
    try:
      yield parse_line(path, number, line, media_root)
    except BadSample as e:
      policy.handle(f"{path}:{number}", e)
