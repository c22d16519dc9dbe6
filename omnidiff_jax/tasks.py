"""The task registry: one `TaskSpec` per task; every per-task table of the package is derived from it.

A task is what the model is trained and sampled on: its ChatML turns (training and inference), its input and
output modalities, its data sources (curriculum stage mixtures), its sampler presets and its eval metric. Its
`id` indexes the per-task loss sums (upstream logs loss_tqa, loss_asr, ...), so ids are fixed: 0..N-1 in
registration order, never reused.

Derived tables (live: a task registered later, e.g. by a test with `registered(spec)`, appears in them):
  data.interfaces.TASKS, chat.TASKS, data.manifest.infer_task, data.synthetic.TASK_MODALITIES,
  data.stages.SOURCE_TASKS / USER_SPEECH_SOURCES, sampling.presets.PRESETS,
  sampling.inputs.TASK_INPUTS / CHAT_TASKS / INFERENCE_USER_TURNS.

Sampler presets come from upstream's inference and eval scripts (reference notes section 4.3). All use
temperature 0 and top-p 0.9. Region lengths / steps:
  t2i, s2i: 260 / 260     svqa, sqa: 128 / 128     vqa: 64 / 64     mme: 8 / 8     text (demo): 32 / 32
  tts, asr (demo): 50 / 25
  tts_eval: int(3.5 * text tokens) / half     asr_eval: int(0.2 * prompt length) / half, one block
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Callable, Iterator

MODALITIES = ("text", "image", "audio")
# Inference input kinds of the input modalities (sampling.inputs: one text / image file / wav file per row).
INFERENCE_INPUT_KINDS = {"text": "text", "image": "image", "audio": "wav"}
# How a preset's CFG unconditional prompt is built (sampling.inputs.uncond_prompt).
UNCOND_RULES = ("empty_user",)  # the task's system turn, an empty user turn and the generation prompt


def fixed_length(n: int) -> Callable[[int, int | None], int]:
  """Region-length rule: always n tokens."""
  return lambda prompt_len, text_len: n


def text_scaled_length(factor: float) -> Callable[[int, int | None], int]:
  """Region-length rule: int(factor * BPE tokens of the input text) (upstream's TTS eval: 3.5)."""
  def region_len(prompt_len: int, text_len: int | None) -> int:
    if text_len is None:
      raise ValueError(f"this preset needs text_len (tokens of the input text): region = int({factor} * text_len)")
    return int(factor * text_len)
  return region_len


def prompt_scaled_length(factor: float) -> Callable[[int, int | None], int]:
  """Region-length rule: max(int(factor * prompt length), 1) (upstream's ASR eval: 0.2)."""
  return lambda prompt_len, text_len: max(int(factor * prompt_len), 1)


def same_steps(region_len: int) -> int:
  return region_len


def half_steps(region_len: int) -> int:
  return max(region_len // 2, 1)


GREEDY = dict(temperature=0.0, top_p=0.9)


@dataclasses.dataclass(frozen=True)
class Preset:
  """Sampler defaults of one use of a task (its demo, an eval variant).

  region_len(prompt_len, text_len) and steps(region_len) give the lengths; sampler: the remaining
  sampling.schedule.SamplerConfig fields (block_size='region': one block over the whole region); uncond: how
  the CFG unconditional prompt is built (one of UNCOND_RULES; None: no CFG prompt).
  """
  name: str
  region_len: Callable[[int, int | None], int]
  steps: Callable[[int], int]
  sampler: dict
  uncond: str | None = None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task.

  name: the task's name (manifests' "task", data.mixture keys, loss_<name> logs); id: its stable index.
  chat: (system prompt or None, user template, assistant template) of the training data; {text} is the task
    input, {answer} the reply, <|image|> / <|audio|> the media placeholders (omnidiff_jax.chat).
  inference_user: upstream inference's user turn where it differs from chat's (None: the same).
  inputs / outputs: modalities of the user turn / the reply, in order (from MODALITIES).
  sources: data sources (data.stages) whose samples are this task; default (name,).
  presets: sampler presets (the first is the task's default, named like the task); () = not sampled.
  metric: eval metric name ('wer', 'clip', 'accuracy') or None.
  """
  name: str
  id: int
  chat: tuple[str | None, str, str]
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  presets: tuple[Preset, ...] = ()
  metric: str | None = None
  inference_user: str | None = None
  sources: tuple[str, ...] = ()

  def __post_init__(self):
    bad = [m for m in self.inputs + self.outputs if m not in MODALITIES]
    if bad or not self.inputs or not self.outputs:
      raise ValueError(f"task {self.name!r}: inputs and outputs must be non-empty tuples of {MODALITIES}, got "
                       f"{self.inputs} -> {self.outputs}")
    bad_uncond = [p.name for p in self.presets if p.uncond is not None and p.uncond not in UNCOND_RULES]
    if bad_uncond:
      raise ValueError(f"task {self.name!r}: presets {bad_uncond} have an unknown uncond rule; use {UNCOND_RULES}")
    if not self.sources:
      object.__setattr__(self, "sources", (self.name,))

  @property
  def takes_user_speech(self) -> bool:
    """Whether the user turn holds speech (SenseVoice feature rows)."""
    return "audio" in self.inputs

  @property
  def output(self) -> str:
    """The reply's modalities as upstream's post-processing names them: e.g. 'text', 'image', 'text+speech'."""
    return "+".join("speech" if m == "audio" else m for m in self.outputs)

  @property
  def inference_inputs(self) -> tuple[str, ...]:
    """What sampling takes per batch row: 'text', 'image' (file) and 'wav' (file), one each."""
    return tuple(INFERENCE_INPUT_KINDS[m] for m in self.inputs)

  def media(self) -> tuple[frozenset[str], frozenset[str]]:
    """(user turn, reply) media modalities: what a manifest line's placeholders must show."""
    return (frozenset(m for m in self.inputs if m != "text"), frozenset(m for m in self.outputs if m != "text"))

  def prompt_matches(self, user_content: str) -> bool:
    """Whether a user turn holds the fixed text of this task's user template (e.g. 'Convert the speech to
    text.'), in order; placeholders, fields and whitespace around them are free."""
    pieces = [p.strip() for p in re.split(r"\{text\}|<\|image\|>|<\|audio\|>", self.chat[1])]
    pattern = ".*".join(re.escape(p) for p in pieces if p)
    return re.search(pattern, user_content, re.DOTALL) is not None


class _Registry:
  """Tasks by name in id order."""

  def __init__(self):
    self.specs: dict[str, TaskSpec] = {}

  def add(self, spec: TaskSpec) -> TaskSpec:
    if spec.name in self.specs:
      raise ValueError(f"task {spec.name!r} is already registered")
    if spec.id != len(self.specs):
      raise ValueError(f"task {spec.name!r} has id {spec.id}; the next free id is {len(self.specs)} (ids are the "
                       "registration order and index the per-task losses)")
    taken = {p.name: t.name for t in self.specs.values() for p in t.presets}
    taken.update({s: t.name for t in self.specs.values() for s in t.sources})
    clashes = [n for n in [p.name for p in spec.presets] + list(spec.sources) if n in taken]
    if clashes:
      raise ValueError(f"task {spec.name!r}: preset / source names {clashes} are already used by "
                       f"{sorted({taken[n] for n in clashes})}")
    self.specs[spec.name] = spec
    return spec


_REGISTRY = _Registry()


def register(spec: TaskSpec) -> TaskSpec:
  """Adds a task for good; its id must be the next free one (`next_id()`)."""
  return _REGISTRY.add(spec)


@contextlib.contextmanager
def registered(spec: TaskSpec) -> Iterator[TaskSpec]:
  """Registers a task for the duration of a `with` block (tests); it must be the last one registered."""
  register(spec)
  try:
    yield spec
  finally:
    if list(_REGISTRY.specs)[-1] != spec.name:
      raise RuntimeError(f"task {spec.name!r} is not the last registered task; cannot unregister it")
    del _REGISTRY.specs[spec.name]


def next_id() -> int:
  return len(_REGISTRY.specs)


def names() -> tuple[str, ...]:
  """Task names in id order."""
  return tuple(_REGISTRY.specs)


def specs() -> tuple[TaskSpec, ...]:
  """Registered tasks in id order."""
  return tuple(_REGISTRY.specs.values())


def get(name: str) -> TaskSpec:
  if name not in _REGISTRY.specs:
    raise ValueError(f"unknown task {name!r}; choose one of {names()}")
  return _REGISTRY.specs[name]


def presets() -> dict[str, tuple[TaskSpec, Preset]]:
  """{preset name: (its task, the preset)} over all tasks."""
  return {p.name: (spec, p) for spec in specs() for p in spec.presets}


class _Live:
  """A read-only view rebuilt from the registry on each access (so later registrations show)."""

  def __init__(self, build: Callable[[], dict | tuple]):
    self._build = build

  def __getitem__(self, key):
    return self._build()[key]

  def __len__(self):
    return len(self._build())

  def __repr__(self):
    return repr(self._build())


class LiveMapping(_Live, Mapping):
  """A live read-only dict."""

  def __iter__(self):
    return iter(self._build())


class LiveSequence(_Live, Sequence):
  """A live read-only tuple; compares equal to a sequence with the same items."""

  def __eq__(self, other):
    return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

  def __hash__(self):
    return id(self)


NAMES = LiveSequence(names)

_ENTROPY = dict(GREEDY, alg="entropy")
_SPEECH_ANSWER = dict(GREEDY, alg="entropy-penalty", repetition_penalty=1.2, boa_fraction=0.2)

# Stable ids: the order of upstream's loss logs and of every checkpoint's per-task metrics; append only.
BUILTIN = (
    # Text chat: no upstream preset; the demo's short answers (32 positions, one step each).
    TaskSpec("text", 0, (None, "{text}", "{answer}"), ("text",), ("text",),
             presets=(Preset("text", fixed_length(32), same_steps, _ENTROPY),), metric="accuracy"),
    TaskSpec("asr", 1, (None, "Convert the speech to text.\n<|audio|>", "{answer}"), ("audio",), ("text",),
             presets=(Preset("asr", fixed_length(50), half_steps, _ENTROPY),
                      Preset("asr_eval", prompt_scaled_length(0.2), half_steps, dict(_ENTROPY, block_size="region"))),
             metric="wer"),
    TaskSpec("tts", 2, (None, "Convert the text to speech.\n{text}", "<|audio|>"), ("text",), ("audio",),
             presets=(Preset("tts", fixed_length(50), half_steps, _ENTROPY),
                      Preset("tts_eval", text_scaled_length(3.5), half_steps,
                             dict(GREEDY, alg="entropy-penalty", repetition_penalty=1.2))),
             metric="wer"),  # WER of ASR on the generated speech
    TaskSpec("t2i", 3, (None, "Generate an image based on the provided text description.\n{text}", "<|image|>"),
             ("text",), ("image",),
             # Upstream's T2I demo runs with cfg 0 (its generate() would use random caption ids): no uncond rule.
             presets=(Preset("t2i", fixed_length(260), same_steps,
                             dict(GREEDY, alg="entropy-penalty", repetition_penalty=1.2, position_penalty=2.0)),),
             metric="clip"),
    TaskSpec("s2i", 4, ("Please generate an image based on the input audio.", "<|audio|>", "<|image|>"),
             ("audio",), ("image",), inference_user="\n<|audio|>",  # run_infer: message "" + "\n<|audio|>"
             presets=(Preset("s2i", fixed_length(260), same_steps,
                             dict(GREEDY, alg="entropy-penalty", repetition_penalty=1.5, position_penalty=2.0,
                                  cfg_scale=2.0), uncond="empty_user"),),
             metric="clip"),
    TaskSpec("svqa", 5, ("Please response the input audio based on the given image.", "<|audio|>\n<|image|>",
                         "{answer}\n<|audio|>"), ("audio", "image"), ("text", "audio"),
             presets=(Preset("svqa", fixed_length(128), same_steps, _SPEECH_ANSWER),), metric="accuracy"),
    # Upstream gives only SQA's system prompt: the reply is assumed to be text then speech, as in SVQA, the
    # inference user turn the speech path's (message "" + "\n<|audio|>", as S2I) and the preset SVQA's.
    TaskSpec("sqa", 6, ("Please response the input audio.", "<|audio|>", "{answer}\n<|audio|>"), ("audio",),
             ("text", "audio"), inference_user="\n<|audio|>",
             presets=(Preset("sqa", fixed_length(128), same_steps, _SPEECH_ANSWER),), metric="accuracy"),
    # Image captioning is an image -> text task with the 'vqa' id (data source 'caption').
    TaskSpec("vqa", 7, (None, "{text}\n<|image|>", "{answer}"), ("image", "text"), ("text",),
             sources=("vqa", "caption"),
             presets=(Preset("vqa", fixed_length(64), same_steps, _ENTROPY),
                      Preset("mme", fixed_length(8), same_steps, _ENTROPY)),
             metric="accuracy"),
)
for builtin in BUILTIN:
  register(builtin)
