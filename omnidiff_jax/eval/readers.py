"""Readers of the benchmarks' published layouts on local disk and of our JSONL manifests -> `Sample`s.

Every reader returns the samples in a fixed order (sorted file names, file line order) so that shards, resumed
runs and devices agree; a missing file or malformed entry raises naming the file and what is expected.

  librispeech   <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + <utterance>.flac
  libritts      <root>/<split>/<speaker>/<chapter>/<utterance>.normalized.txt (+ .wav)
  *_tfds        LibriSpeech / LibriTTS prepared locally as TFDS ArrayRecord datasets (data.tfds_source; the real
                datasets' Audio features need TensorFlow next to tensorflow_datasets, see there)
  mme           <root>/eval_tool/Your_Results/<subtask>.txt ("image \\t question \\t answer" lines, two per image)
                + the images under <root>/images/<subtask>/ (upstream's layout), <root>/<subtask>/images/ or
                <root>/<subtask>/ (the MME release)
  pope          <dir>/coco_pope_<split>.json (JSON lines: question_id, image, text, label) + COCO val2014 images
  coco_captions annotations/captions_val2014.json + the val2014 images; a seeded random subset (Emu protocol)
  seed2plus     SEED-Bench-2-Plus JSON ({"questions": [...]}, {"data": [...]} or a list) + its image folder
  manifest      our / upstream's JSONL manifests (omnidiff_jax.data.manifest)
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
from typing import Any

import numpy as np
import soundfile

from omnidiff_jax import chat
from omnidiff_jax.data import manifest as manifest_lib
from omnidiff_jax.data.errors import BadInputPolicy, BadSample


@dataclasses.dataclass(frozen=True)
class Sample:
  """One benchmark item. id: unique within its benchmark; inputs: the task inputs (any of 'text', 'image',
  'wav': a string / file path each); reference: what the metric compares with (e.g. 'text', 'label',
  'answer', 'choices', 'subtask', 'image' = the real image's path)."""
  id: str
  inputs: dict[str, str]
  reference: dict[str, Any]


def _require_dir(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{what}: no directory {path!r}")


def _require_file(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what}: no file {path!r}")


def _split_dir(root: str, split: str, name: str) -> str:
  """<root>/<split>, or <root>/<name>/<split> (the archives unpack into a LibriSpeech/ or LibriTTS/ folder)."""
  for candidate in (os.path.join(root, split), os.path.join(root, name, split)):
    if os.path.isdir(candidate):
      return candidate
  raise FileNotFoundError(f"{name}: no split folder {split!r} under {root!r} (expected {root}/{split} or "
                          f"{root}/{name}/{split})")


def librispeech(root: str, split: str = "test-clean") -> list[Sample]:
  """ASR samples: inputs wav = the .flac, reference text = the transcript line."""
  base = _split_dir(root, split, "LibriSpeech")
  samples = []
  for transcript in sorted(glob.glob(os.path.join(base, "*", "*", "*.trans.txt"))):
    folder = os.path.dirname(transcript)
    with open(transcript, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        utterance, _, text = line.strip().partition(" ")
        if not text:
          raise ValueError(f"{transcript}:{number}: expected '<utterance-id> <TEXT>', got {line.strip()!r}")
        audio = os.path.join(folder, utterance + ".flac")
        _require_file(audio, f"{transcript}:{number}")
        samples.append(Sample(utterance, {"wav": audio}, {"text": text}))
  if not samples:
    raise FileNotFoundError(f"LibriSpeech: no *.trans.txt under {base}/<speaker>/<chapter>/")
  return samples


def libritts(root: str, split: str = "test-clean") -> list[Sample]:
  """TTS samples: inputs text = reference text = the .normalized.txt (the utterance's .wav is the real speech)."""
  base = _split_dir(root, split, "LibriTTS")
  samples = []
  for text_file in sorted(glob.glob(os.path.join(base, "*", "*", "*.normalized.txt"))):
    utterance = os.path.basename(text_file)[:-len(".normalized.txt")]
    with open(text_file, encoding="utf-8") as f:
      text = f.read().strip()
    if not text:
      raise ValueError(f"{text_file}: empty text")
    wav = os.path.join(os.path.dirname(text_file), utterance + ".wav")
    samples.append(Sample(utterance, {"text": text}, {"text": text, "wav": wav if os.path.isfile(wav) else None}))
  if not samples:
    raise FileNotFoundError(f"LibriTTS: no *.normalized.txt under {base}/<speaker>/<chapter>/")
  return samples


def _tfds_examples(name: str, split: str, data_dir: str, limit: int | None):
  """[(sample id, example)] of a local TFDS dataset sorted by its 'id' feature (the index where it has none),
  the first `limit` of them."""
  from omnidiff_jax.data import tfds_source  # tensorflow_datasets is optional
  _require_dir(data_dir, f"TFDS {name} (the data_dir holding {name}/<version>/)")
  try:
    source = tfds_source.data_source(name, split, data_dir)
  except ModuleNotFoundError:  # TensorFlow missing for Audio / Image features: the message says so
    raise
  except Exception as e:  # tfds raises several types (DatasetNotFoundError, ValueError for an unknown split)
    raise FileNotFoundError(f"TFDS {name}, split {split!r}: not readable under {data_dir!r} (prepare it with "
                            f"`tfds build {name} --file_format=array_record --data_dir={data_dir}`): {e}") from e
  examples = []
  for index in range(len(source)):
    example = source[index]
    key = example.get("id", f"{split}[{index}]")
    examples.append((key.decode("utf-8") if isinstance(key, bytes) else str(key), example))
  examples.sort(key=lambda item: item[0])
  return examples[:limit] if limit else examples


def librispeech_tfds(data_dir: str, wav_dir: str, split: str = "test_clean", name: str = "librispeech",
                     limit: int | None = None) -> list[Sample]:
  """ASR samples of TFDS librispeech (features 'speech': 16 kHz int16, 'text', 'id'), read by the training
  adapter (data.tfds_source.asr_record); each utterance is written once to <wav_dir>/<id>.wav (16-bit PCM, the
  dataset's own samples) for the speech encoder."""
  from omnidiff_jax.data import tfds_source
  os.makedirs(wav_dir, exist_ok=True)
  samples = []
  for key, example in _tfds_examples(name, split, data_dir, limit):
    where = f"TFDS {name}/{split} example {key!r}"
    try:
      record = tfds_source.asr_record(example, where)
    except (BadSample, KeyError) as e:
      raise ValueError(f"{where}: expected 'speech' (16 kHz int16) and a non-empty 'text' ({e!r})") from e
    wav = os.path.join(wav_dir, key + ".wav")
    if not os.path.isfile(wav):
      audio = record.audios[0]
      soundfile.write(wav + ".tmp", np.asarray(audio.array, np.int16), audio.sample_rate, format="WAV",
                      subtype="PCM_16")
      os.replace(wav + ".tmp", wav)  # atomic: hosts sharing wav_dir never read a half-written file
    samples.append(Sample(key, {"wav": wav}, {"text": record.messages[1]["content"]}))
  if not samples:
    raise ValueError(f"TFDS {name}/{split} under {data_dir}: no examples")
  return samples


def libritts_tfds(data_dir: str, split: str = "test_clean", name: str = "libritts", limit: int | None = None
                  ) -> list[Sample]:
  """TTS samples of TFDS libritts: inputs text = reference text = the 'text_normalized' feature."""
  samples = []
  for key, example in _tfds_examples(name, split, data_dir, limit):
    text = example.get("text_normalized")
    text = (text.decode("utf-8") if isinstance(text, bytes) else str(text or "")).strip()
    if not text:
      raise ValueError(f"TFDS {name}/{split} example {key!r}: empty or missing 'text_normalized'")
    samples.append(Sample(key, {"text": text}, {"text": text, "wav": None}))
  if not samples:
    raise ValueError(f"TFDS {name}/{split} under {data_dir}: no examples")
  return samples


def _mme_image(root: str, subtask: str, name: str) -> str:
  candidates = [os.path.join(root, "images", subtask, name), os.path.join(root, subtask, "images", name),
                os.path.join(root, subtask, name)]
  found = next((c for c in candidates if os.path.isfile(c)), None)
  if found is None:
    raise FileNotFoundError(f"MME image {name!r} of {subtask}: none of {candidates}")
  return found


def mme(root: str, subtasks: tuple[str, ...] | None = None) -> list[Sample]:
  """MME yes/no questions in file order (pairs share an image); reference: answer, subtask, image name."""
  results = os.path.join(root, "eval_tool", "Your_Results")
  _require_dir(results, "MME (the eval_tool/Your_Results folder of MME_Benchmark_release_version)")
  names = sorted(f[:-4] for f in os.listdir(results) if f.endswith(".txt"))
  if subtasks is not None:
    missing = sorted(set(subtasks) - set(names))
    if missing:
      raise FileNotFoundError(f"MME: no {', '.join(m + '.txt' for m in missing)} in {results}")
    names = [n for n in names if n in subtasks]
  samples = []
  for subtask in names:
    path = os.path.join(results, subtask + ".txt")
    with open(path, encoding="utf-8") as f:
      lines = [line.rstrip("\n") for line in f if line.strip()]
    if len(lines) % 2:
      raise ValueError(f"{path}: {len(lines)} questions; MME has two per image")
    for number, line in enumerate(lines, start=1):
      fields = line.split("\t")
      if len(fields) < 3:
        raise ValueError(f"{path}:{number}: expected 'image<TAB>question<TAB>answer', got {line!r}")
      image, question, answer = fields[:3]
      samples.append(Sample(f"{subtask}/{number:05d}", {"text": question, "image": _mme_image(root, subtask, image)},
                            {"answer": answer, "subtask": subtask, "image_name": image, "question": question}))
  return samples


def pope(pope_dir: str, coco_images: str, splits: tuple[str, ...] = ("random", "popular", "adversarial")
         ) -> list[Sample]:
  """POPE questions (COCO val2014 images); reference: label ('yes' / 'no') and split."""
  _require_dir(coco_images, "POPE (the COCO val2014 image folder)")
  samples = []
  for split in splits:
    path = os.path.join(pope_dir, f"coco_pope_{split}.json")
    _require_file(path, f"POPE split {split!r}")
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
          question_id, image, text, label = row["question_id"], row["image"], row["text"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise ValueError(f"{path}:{number}: expected a JSON object with question_id, image, text, label "
                           f"({e!r})") from e
        if label not in ("yes", "no"):
          raise ValueError(f"{path}:{number}: label must be 'yes' or 'no', got {label!r}")
        image_path = os.path.join(coco_images, image)
        _require_file(image_path, f"{path}:{number}")
        samples.append(Sample(f"{split}/{question_id}", {"text": text, "image": image_path},
                              {"label": label, "split": split}))
  return samples


def coco_captions(annotations: str, images: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
  """COCO captions (e.g. captions_val2014.json): inputs text = caption; reference: caption and the real image.
  limit: a random subset of this many captions drawn with `seed` (the paper: 10,000, Emu protocol)."""
  _require_file(annotations, "COCO captions")
  _require_dir(images, "COCO images")
  with open(annotations, encoding="utf-8") as f:
    data = json.load(f)
  if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
    raise ValueError(f"{annotations}: expected COCO captions JSON with 'images' and 'annotations'")
  files = {image["id"]: image["file_name"] for image in data["images"]}
  rows = sorted(data["annotations"], key=lambda a: a["id"])
  if limit is not None and limit < len(rows):
    rows = sorted(random.Random(seed).sample(rows, limit), key=lambda a: a["id"])
  samples = []
  for row in rows:
    if row["image_id"] not in files:
      raise ValueError(f"{annotations}: annotation {row['id']} names image_id {row['image_id']}, not in 'images'")
    real = os.path.join(images, files[row["image_id"]])
    _require_file(real, f"{annotations}: annotation {row['id']}")
    caption = row["caption"].strip()
    samples.append(Sample(str(row["id"]), {"text": caption}, {"caption": caption, "image": real}))
  return samples


SEED2PLUS_PROMPT = ("{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n"
                    "Answer with the option's letter from the given choices directly.")


def seed2plus(json_path: str, image_root: str) -> list[Sample]:
  """SEED-Bench-2-Plus multiple choice: inputs text = question + the four options (SEED2PLUS_PROMPT), image =
  <image_root>/<data_id>; reference: answer letter, choices, question_image_type (charts / maps / webs)."""
  _require_file(json_path, "Seed-2-Plus")
  with open(json_path, encoding="utf-8") as f:
    data = json.load(f)
  rows = data
  if isinstance(data, dict):
    rows = data.get("questions", data.get("data"))
  if not isinstance(rows, list):
    raise ValueError(f"{json_path}: expected a list of questions (or {{'questions': [...]}} / {{'data': [...]}})")
  samples = []
  for index, row in enumerate(rows):
    keys = ("question_id", "question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "data_id")
    missing = [k for k in keys if k not in row]
    if missing:
      raise ValueError(f"{json_path}: question {index} lacks {missing}")
    choices = [str(row[f"choice_{letter}"]) for letter in "ABCD"]
    image = os.path.join(image_root, row["data_id"])
    _require_file(image, f"{json_path}: question {row['question_id']}")
    text = SEED2PLUS_PROMPT.format(question=row["question"], **dict(zip("ABCD", choices)))
    samples.append(Sample(str(row["question_id"]), {"text": text, "image": image},
                          {"answer": row["answer"], "choices": choices,
                           "type": row.get("question_image_type", "")}))
  return samples


def manifest(path: str, media_root: str | None = None) -> list[Sample]:
  """JSONL manifest records (omnidiff_jax.data.manifest; any bad line raises naming file:line) as samples.

  inputs: text = the first user turn with the task prompt and placeholders removed (the TTS text, T2I caption or
  VQA question; none for ASR), image / wav = the first user image / audio path; reference: text = the assistant
  text (ASR transcript, VQA answer) or, for TTS, the text to speak; image / wav = the assistant image / audio
  path (T2I / S2I; TTS, SVQA / SQA).
  Upstream's eval manifests (LibriSpeech / LibriTTS JSONL) read the same way.
  """
  samples = []
  for record in manifest_lib.iter_records(path, BadInputPolicy("error"), media_root):
    user = next(m["content"] for m in record.messages if m["role"] == "user")
    answer = next(m["content"] for m in record.messages if m["role"] == "assistant")
    prompt = chat.TASKS[record.task][1].split("{text}")[0] if record.task in chat.TASKS else ""
    text = user[len(prompt):] if prompt and user.startswith(prompt) else user
    for tag in (chat.IMAGE_TAG, chat.AUDIO_TAG):
      text = text.replace(tag, "")
    text = text.strip()
    inputs = {"text": text} if text else {}
    for kind, items in (("image", record.images), ("wav", record.audios)):
      user_items = [item.path for item in items if item.role == "user" and item.path]
      if user_items:
        inputs[kind] = user_items[0]
    for tag in (chat.IMAGE_TAG, chat.AUDIO_TAG):
      answer = answer.replace(tag, "")
    reference = {"text": text if record.task == "tts" else answer.strip(), "task": record.task}
    for kind, items in (("image", record.images), ("wav", record.audios)):
      assistant_items = [item.path for item in items if item.role == "assistant" and item.path]
      if assistant_items:
        reference[kind] = assistant_items[0]
    line = record.where.rsplit(":", 1)[1]
    samples.append(Sample(f"{os.path.basename(path)}:{line}", inputs, reference))
  return samples
