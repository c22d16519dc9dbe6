"""The demo's built-in multimodal corpus, made deterministically at run time (no downloads).

  build_corpus(out_dir, cfg) writes, for the splits 'train' and 'heldout':
    images/<split>/<i>.png         RGB pictures of one coloured shape on a plain background (cfg.corpus.image_size)
    labels/<split>.jsonl           one line per picture: image, shape, colour, their ids, caption, position, size
    audio/<voice>/<words>.wav      16 kHz mono speech (omnidiff_jax.demo.speech), shared by the manifests
    manifests/<split>/<source>.jsonl   upstream JSONL manifests (omnidiff_jax.data.manifest), one per data source,
                                   media paths relative to the manifest (../../images/..., ../../audio/...):
        t2i      caption -> picture            s2i   spoken caption -> picture
        caption  picture + question -> caption (task vqa)      vqa   picture + question -> answer
        asr      spoken caption -> caption     tts   caption -> speech (the assistant voice)
        svqa     spoken question + picture -> answer + spoken answer
        sqa      spoken chat question -> answer + spoken answer      text   chat question -> answer
    corpus.json                    config, counts, label names, splits, the synthesiser used
  Prompts are the task registry's (omnidiff_jax.chat.task_messages). Split k draws from PCG64([seed, k]), so
  held-out pictures are new draws (new positions / sizes, never pixel-identical to a training picture; label
  combinations repeat); held-out user speech uses voices (speed, pitch) not used in train. Shapes sit near the
  centre (corpus.centre_jitter, corpus.size_range), so that a picture's codes depend mostly on its labels. Chat
  lines (text, sqa) ask the questions of one fixed pool (CHAT_POOL: 32 questions, each with its own key words and
  answer) in both splits, every question once per round of len(CHAT_POOL) lines: held-out chat scores memorisation
  (held-out SQA asks in voices not used in train), and the best constant answer scores about 1 / 32. User speech
  is spoken in varied voices, assistant speech always in ASSISTANT_VOICE (so TTS targets are one code sequence per
  text).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import ml_collections
import numpy as np
from tqdm import tqdm

from omnidiff_jax import chat
from omnidiff_jax.demo import speech

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 20),
           "purple": (140, 60, 180), "orange": (240, 130, 30)}
BACKGROUND = (245, 245, 245)
SPLITS = ("train", "heldout")
SOURCES = ("t2i", "s2i", "caption", "vqa", "asr", "tts", "svqa", "sqa", "text")
CAPTION_TEMPLATES = ("a {colour} {shape}", "a picture of a {colour} {shape}",
                     "a {colour} {shape} on a white background")
CAPTION_QUESTION = "what is in the picture?"
# (question, which label answers it); 'exists' asks "is there a <colour> <shape>?" -> yes / no.
VQA_QUESTIONS = (("what colour is the shape?", "colour"), ("what shape is this?", "shape"), (None, "exists"))
USER_VOICES = {"train": tuple(speech.Voice(s, p) for s in (140, 175, 210) for p in (30, 70)),
               "heldout": (speech.Voice(155, 50), speech.Voice(195, 50))}
ASSISTANT_VOICE = speech.Voice(170, 50)
# The chat pool (text and spoken chat lines): each question has its own key word(s) and its own one- or two-word
# answer, so a model that ignores the question scores at most 1 / len(pool) per question drawn, and the questions
# are told apart by their key words (the pool is memorised: held-out lines ask the same questions, held-out spoken
# ones in voices not used in train).
CHAT_POOL = (
    ("what colour is the sky?", "blue"), ("what colour is grass?", "green"), ("what colour is a banana?", "yellow"),
    ("what colour is a tomato?", "red"), ("what colour is snow?", "white"), ("what colour is coal?", "black"),
    ("how many legs does a spider have?", "eight"), ("how many days are in a week?", "seven"),
    ("how many wheels does a bicycle have?", "two"), ("how many sides does a triangle have?", "three"),
    ("what do cats say?", "meow"), ("what do dogs say?", "woof"), ("what do cows say?", "moo"),
    ("what is the opposite of hot?", "cold"), ("what is the opposite of up?", "down"),
    ("what is the opposite of day?", "night"), ("what is the capital of france?", "paris"),
    ("what is the capital of japan?", "tokyo"), ("what is the capital of italy?", "rome"),
    ("what do bees make?", "honey"), ("where do fish live?", "in water"), ("what falls from clouds?", "rain"),
    ("what shines in the daytime?", "the sun"), ("what shines at night?", "the moon"), ("what is frozen water?", "ice"),
    ("what do birds fly with?", "wings"), ("what tells the time?", "a clock"), ("which season is coldest?", "winter"),
    ("what animal has a trunk?", "an elephant"), ("what do you sleep in?", "a bed"),
    ("hello", "hello, how can i help?"), ("thank you", "you are welcome"))
SUPERSAMPLE = 4
MANIFEST_TO_ROOT = "../../"   # from manifests/<split>/ to the corpus root


def render_picture(shape: str, colour: str, cx: float, cy: float, size: float, image_size: int) -> np.ndarray:
  """One picture (image_size, image_size, 3) uint8: `shape` of half-width `size` px centred at (cx, cy) px, drawn
  at SUPERSAMPLE x resolution and box-filtered (anti-aliased edges)."""
  n = image_size * SUPERSAMPLE
  y, x = (np.mgrid[0:n, 0:n] + 0.5) / SUPERSAMPLE
  dx, dy = x - cx, y - cy
  if shape == "circle":
    inside = dx ** 2 + dy ** 2 <= size ** 2
  elif shape == "square":
    inside = (np.abs(dx) <= 0.8 * size) & (np.abs(dy) <= 0.8 * size)
  elif shape == "triangle":   # apex up, base at cy + 0.8 size
    inside = (dy <= 0.8 * size) & (np.abs(dx) <= (dy + size) * 0.6)
  elif shape == "cross":
    arm = 0.3 * size
    inside = ((np.abs(dx) <= arm) & (np.abs(dy) <= size)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= size))
  elif shape == "diamond":
    inside = np.abs(dx) + np.abs(dy) <= size
  elif shape == "ring":
    inside = (dx ** 2 + dy ** 2 <= size ** 2) & (dx ** 2 + dy ** 2 >= (0.55 * size) ** 2)
  else:
    raise ValueError(f"unknown shape {shape!r}; corpus.shapes must be among {SHAPES}")
  pixels = np.where(inside[..., None], np.asarray(COLOURS[colour], np.float32), np.asarray(BACKGROUND, np.float32))
  pixels = pixels.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE, 3).mean(axis=(1, 3))
  return np.round(pixels).astype(np.uint8)


def _check(cfg: ml_collections.ConfigDict) -> None:
  bad = [s for s in cfg.shapes if s not in SHAPES] + [c for c in cfg.colours if c not in COLOURS]
  if bad:
    raise ValueError(f"corpus.shapes / corpus.colours: unknown {bad}; choose shapes from {SHAPES} and colours "
                     f"from {tuple(COLOURS)}")
  if len(set(cfg.shapes)) < 2 or len(set(cfg.colours)) < 2:
    raise ValueError("corpus.shapes and corpus.colours need at least 2 distinct names each")
  low, high = cfg.size_range
  if not (0 <= cfg.centre_jitter and 0 < low <= high and high + cfg.centre_jitter <= 0.5):
    raise ValueError(f"corpus.centre_jitter ({cfg.centre_jitter}) and corpus.size_range ({cfg.size_range}) are "
                     "fractions of the picture side: need 0 <= centre_jitter, 0 < low <= high and high + "
                     "centre_jitter <= 0.5 (the shape inside the picture)")
  if cfg.image_size < 16 or cfg.sample_rate != speech.SAMPLE_RATE:
    raise ValueError(f"corpus.image_size must be >= 16 (got {cfg.image_size}) and corpus.sample_rate "
                     f"{speech.SAMPLE_RATE} (got {cfg.sample_rate})")


def _pictures(cfg, split: str, rng: np.random.Generator, out_dir: str, seen: set[bytes]) -> list[dict]:
  """Draws, renders and saves the split's pictures; returns their label rows. Label combinations are balanced
  (each appears n / combos times, in a random order). Shapes are centred up to cfg.centre_jitter x side in x and
  y, half-width cfg.size_range x side. A picture whose pixels are in `seen` (the SHA-256 of earlier pictures;
  updated) is drawn again, so held-out pictures never repeat a training picture."""
  from PIL import Image
  count = cfg.train_images if split == "train" else cfg.heldout_images
  combos = [(s, c) for s in range(len(cfg.shapes)) for c in range(len(cfg.colours))]
  order = rng.permutation(np.arange(count) % len(combos))
  os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
  rows, side = [], cfg.image_size
  for i, combo in enumerate(tqdm(order, desc=f"corpus pictures ({split})", leave=False)):
    shape_id, colour_id = combos[combo]
    shape, colour = cfg.shapes[shape_id], cfg.colours[colour_id]
    for _ in range(100):
      size = float(rng.uniform(*cfg.size_range) * side)
      cx, cy = (float(v) for v in (0.5 + rng.uniform(-cfg.centre_jitter, cfg.centre_jitter, size=2)) * side)
      pixels = render_picture(shape, colour, cx, cy, size, side)
      digest = hashlib.sha256(pixels.tobytes()).digest()
      if digest not in seen:
        break
    else:
      raise ValueError(f"100 draws of a {colour} {shape} all repeat earlier pictures; widen corpus.centre_jitter "
                       f"({cfg.centre_jitter}) or corpus.size_range ({cfg.size_range})")
    seen.add(digest)
    caption = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(colour=colour, shape=shape)
    rel = f"images/{split}/{i:05d}.png"
    Image.fromarray(pixels).save(os.path.join(out_dir, rel))
    rows.append(dict(image=rel, shape=shape, colour=colour, shape_id=int(shape_id), colour_id=int(colour_id),
                     caption=caption, cx=round(cx, 3), cy=round(cy, 3), size=round(size, 3)))
  return rows


class _Speaker:
  """Writes each (text, voice) once as audio/<voice>/<words>.wav and returns its corpus-relative path."""

  def __init__(self, out_dir: str, synthesiser: str):
    self.out_dir, self.synthesiser, self.paths = out_dir, synthesiser, {}

  def __call__(self, text: str, voice: speech.Voice) -> str:
    import soundfile as sf
    key = (text, voice)
    if key not in self.paths:
      words = "_".join("".join(c for c in w if c.isalnum()) for w in text.lower().split())
      rel = f"audio/{voice.name}/{words[:80]}_{hashlib.sha256(text.encode()).hexdigest()[:8]}.wav"
      os.makedirs(os.path.dirname(os.path.join(self.out_dir, rel)), exist_ok=True)
      sf.write(os.path.join(self.out_dir, rel), speech.synthesise(text, voice, self.synthesiser), speech.SAMPLE_RATE,
               subtype="PCM_16")
      self.paths[key] = rel
    return self.paths[key]


def _line(task: str, text: str = "", answer: str = "", *, images=(), audios=()) -> dict:
  """One manifest line; answer is ignored by tasks whose reply is only a media placeholder (t2i, s2i, tts). Media
  paths (corpus-relative) are written relative to the manifest's folder, where data.manifest resolves them."""
  rel = lambda paths: [MANIFEST_TO_ROOT + p for p in paths]
  return dict(messages=chat.task_messages(task, text, answer), images=rel(images), audios=rel(audios), task=task)


def _vqa(row: dict, index: int, cfg, rng: np.random.Generator) -> tuple[str, str]:
  """The (question, answer) of picture `row`: its colour, its shape or whether a (true or other) combination is
  there, cycling with `index`."""
  question, kind = VQA_QUESTIONS[index % len(VQA_QUESTIONS)]
  if kind != "exists":
    return question, row[kind]
  truth = rng.integers(2) == 1
  shape, colour = row["shape"], row["colour"]
  if not truth:
    if rng.integers(2):
      shape = cfg.shapes[(row["shape_id"] + 1 + rng.integers(len(cfg.shapes) - 1)) % len(cfg.shapes)]
    else:
      colour = cfg.colours[(row["colour_id"] + 1 + rng.integers(len(cfg.colours) - 1)) % len(cfg.colours)]
  return f"is there a {colour} {shape}?", "yes" if truth else "no"


def _manifests(cfg, split: str, rows: list[dict], rng: np.random.Generator, say: _Speaker) -> dict[str, list]:
  """The split's manifest lines per data source."""
  voices = USER_VOICES[split]
  user_voice = lambda: voices[rng.integers(len(voices))]
  lines = {source: [] for source in SOURCES}
  for i, row in enumerate(tqdm(rows, desc=f"corpus speech ({split})", leave=False)):
    image, caption = row["image"], row["caption"]
    spoken_caption = say(caption, user_voice())
    lines["t2i"].append(_line("t2i", caption, images=[image]))
    lines["s2i"].append(_line("s2i", audios=[spoken_caption], images=[image]))
    lines["caption"].append(_line("vqa", CAPTION_QUESTION, caption, images=[image]))
    lines["vqa"].append(_line("vqa", *_vqa(row, i, cfg, rng), images=[image]))
    lines["asr"].append(_line("asr", answer=caption, audios=[spoken_caption]))
    lines["tts"].append(_line("tts", caption, audios=[say(caption, ASSISTANT_VOICE)]))
    question, kind = VQA_QUESTIONS[i % 2]   # spoken questions: colour or shape
    lines["svqa"].append(_line("svqa", answer=row[kind], images=[image],
                               audios=[say(question, user_voice()), say(row[kind], ASSISTANT_VOICE)]))
  count = cfg.chat_train if split == "train" else cfg.chat_heldout
  rounds = [rng.permutation(len(CHAT_POOL)) for _ in range(-(-count // len(CHAT_POOL)))]
  for j in np.concatenate(rounds)[:count]:   # every question once per round (the last round may be cut short)
    question, answer = CHAT_POOL[j]
    lines["text"].append(_line("text", question, answer))
    lines["sqa"].append(_line("sqa", answer=answer, audios=[say(question, user_voice()), say(answer, ASSISTANT_VOICE)]))
  return lines


def _write_jsonl(path: str, rows: list[dict]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def corpus_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The corpus section of a demo config (configs/demo_media.py), or `cfg` itself when it is that section."""
  return cfg.corpus if "corpus" in cfg else cfg


def build_corpus(out_dir: str, cfg: ml_collections.ConfigDict) -> dict:
  """Builds the corpus under out_dir (see the module docstring) and returns corpus.json's content.

  cfg: a demo config (configs/demo_media.py) or its corpus section. If out_dir/corpus.json exists with the same
  corpus config, it is returned without work (resume); otherwise the corpus folders are rebuilt from scratch.
  """
  cfg = corpus_config(cfg)
  _check(cfg)
  config = json.loads(cfg.to_json(sort_keys=True))
  summary_path = os.path.join(out_dir, "corpus.json")
  if os.path.isfile(summary_path):
    with open(summary_path, encoding="utf-8") as f:
      summary = json.load(f)
    if summary.get("config") == config:
      return summary
  for folder in ("images", "labels", "audio", "manifests"):
    shutil.rmtree(os.path.join(out_dir, folder), ignore_errors=True)
  synthesiser = speech.resolve(cfg.synthesiser)
  say = _Speaker(out_dir, synthesiser)
  counts, seen = {}, set()
  for k, split in enumerate(SPLITS):
    rng = np.random.default_rng([cfg.seed, k])
    rows = _pictures(cfg, split, rng, out_dir, seen)
    _write_jsonl(os.path.join(out_dir, "labels", f"{split}.jsonl"), rows)
    for source, lines in _manifests(cfg, split, rows, rng, say).items():
      _write_jsonl(os.path.join(out_dir, "manifests", split, f"{source}.jsonl"), lines)
      counts.setdefault(split, {})[source] = len(lines)
  summary = dict(
      config=config, splits=list(SPLITS), counts=counts, shapes=list(cfg.shapes), colours=list(cfg.colours),
      pictures={s: cfg.train_images if s == "train" else cfg.heldout_images for s in SPLITS},
      wav_files=len(say.paths),
      synthesiser=synthesiser, synthesiser_version=speech.version(synthesiser),
      user_voices={s: [v.name for v in vs] for s, vs in USER_VOICES.items()}, assistant_voice=ASSISTANT_VOICE.name,
      manifests={s: {src: f"manifests/{s}/{src}.jsonl" for src in SOURCES} for s in SPLITS},
      labels={s: f"labels/{s}.jsonl" for s in SPLITS},
      chat_pool=len(CHAT_POOL),
      notes="chat questions (text, sqa) come from one fixed pool in both splits (memorisation: held-out lines ask "
            "training questions; held-out spoken ones in new voices); held-out pictures are new draws whose label "
            "combinations repeat train's; held-out user speech uses voices not in train")
  with open(summary_path, "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  return summary


def read_labels(corpus_dir: str, split: str) -> list[dict]:
  """labels/<split>.jsonl rows of a built corpus."""
  path = os.path.join(corpus_dir, "labels", f"{split}.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found; build the corpus first (omnidiff_jax.demo.corpus.build_corpus)")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def load_pictures(corpus_dir: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A split's pictures (N, H, W, 3) uint8, shape ids (N,) and colour ids (N,) int32."""
  from PIL import Image
  rows = read_labels(corpus_dir, split)
  images = np.stack([np.asarray(Image.open(os.path.join(corpus_dir, r["image"])).convert("RGB")) for r in rows])
  return (images, np.asarray([r["shape_id"] for r in rows], np.int32),
          np.asarray([r["colour_id"] for r in rows], np.int32))
