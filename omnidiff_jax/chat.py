"""ChatML prompts of the upstream tasks, expanded into token ids, and the inverse split of generated ids.

Upstream format (reference section 3.4): `<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn, no default
system message, generation prompt `<|im_start|>assistant\\n`. Placeholders in the content are consumed
in order:
  <|image|>  -> <|begin_of_image|> <|image_c|>... <|end_of_image|>              (codes given, any role)
  <|audio|>  in a user/system turn -> <|begin_of_audio|> <|context_of_audio|> x n <|end_of_audio|>
             (n = T_lfr + 4 SenseVoice feature slots, given; the model overwrites their embeddings)
  <|audio|>  in an assistant turn -> <|begin_of_audio|> <|audio_c|>... <|end_of_audio|>  (GLM-4-Voice codes)
Targets (upstream's labels != -100) are the assistant content, its <|im_end|> and the '\\n' after it.
Text between placeholders is tokenized piece by piece, which equals tokenizing the expanded string: the
added tokens split the text before BPE in both cases. The role line `{role}\\n` is tokenized apart from the
content, as upstream's training data code does; upstream's inference (apply_chat_template) tokenizes the whole
string, which differs only where a content starts with whitespace ('user\\n' + '\\n<|audio|>' gives one
'\\n\\n' token in Qwen2's BPE): `join_role_line=True` reproduces that.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
import tokenizers

from omnidiff_jax import tasks
from omnidiff_jax.vocab import VocabLayout

IMAGE_TAG, AUDIO_TAG = "<|image|>", "<|audio|>"
_PLACEHOLDER = re.compile(r"(<\|image\|>|<\|audio\|>)")

# task -> (system prompt, user template, assistant template); {text} is the task input, {answer} the reply.
TASKS = tasks.LiveMapping(lambda: {spec.name: spec.chat for spec in tasks.specs()})


def task_messages(task: str, text: str = "", answer: str | None = None) -> list[dict[str, str]]:
  """Messages of an upstream task prompt. With answer=None (generation) there is no assistant turn.

  text: the TTS text, T2I caption or VQA question; answer: the assistant's text (ASR transcript, VQA /
  SVQA / SQA answer; ignored by TTS, T2I and S2I whose reply is only the <|audio|> / <|image|> placeholder).
  """
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
  system, user, assistant = TASKS[task]
  messages = [] if system is None else [dict(role="system", content=system)]
  messages.append(dict(role="user", content=user.format(text=text)))
  if answer is not None:
    messages.append(dict(role="assistant", content=assistant.format(answer=answer)))
  return messages


@dataclasses.dataclass(frozen=True)
class ChatExample:
  """ids: (L,) int32; target_mask: (L,) bool, True where upstream has a label; audio_slots: (S,) int32,
  the positions of the <|context_of_audio|> feature slots of all user audios, in order."""
  ids: np.ndarray
  target_mask: np.ndarray
  audio_slots: np.ndarray


def build_chat(messages: Sequence[dict[str, str]], layout: VocabLayout, tokenizer: tokenizers.Tokenizer, *,
               images: Sequence[Sequence[int]] = (), audio_slot_counts: Sequence[int] = (),
               speech_codes: Sequence[Sequence[int]] = (), add_generation_prompt: bool = False,
               join_role_line: bool = False) -> ChatExample:
  """Token ids of a ChatML conversation with its placeholders expanded.

  Args:
    messages: [{'role': 'system' | 'user' | 'assistant', 'content': str}, ...].
    images: MAGVIT-v2 code lists (each in [0, num_image_codes)), one per <|image|> in order.
    audio_slot_counts: feature-slot counts (T_lfr + 4), one per user/system <|audio|> in order.
    speech_codes: GLM-4-Voice code lists, one per assistant <|audio|> in order.
    add_generation_prompt: append '<|im_start|>assistant\\n' (for sampling).
    join_role_line: tokenize each '{role}\\n' together with the text its content starts with, like
      tokenizing the whole string (upstream's inference prompts); only for turns without targets.
  """
  images, slot_counts, speech = list(images), list(audio_slot_counts), list(speech_codes)
  counts = {"images": 0, "audio_slot_counts": 0, "speech_codes": 0}
  nl = tokenizer.encode("\n", add_special_tokens=False).ids
  ids: list[int] = []
  target: list[bool] = []
  slots: list[int] = []

  def take(kind: str, pool: list):
    if counts[kind] >= len(pool):
      raise ValueError(f"more placeholders than {kind} given ({len(pool)})")
    counts[kind] += 1
    return pool[counts[kind] - 1]

  def codes(values, num: int, offset: int, kind: str) -> list[int]:
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < 0 or values.max() >= num):
      raise ValueError(f"{kind} codes must lie in [0, {num}), got [{values.min()}, {values.max()}]")
    return (values + offset).tolist()

  def content_ids(role: str, content: str, start: int) -> list[int]:
    """Ids of one turn's content; `start` is the position of its first id in the conversation."""
    out = []
    for piece in _PLACEHOLDER.split(content):
      if piece == IMAGE_TAG:
        out += [layout.special_id("<|begin_of_image|>"),
                *codes(take("images", images), layout.num_image_codes, layout.image_offset, "image"),
                layout.special_id("<|end_of_image|>")]
      elif piece == AUDIO_TAG and role == "assistant":
        out += [layout.special_id("<|begin_of_audio|>"),
                *codes(take("speech_codes", speech), layout.num_audio_codes, layout.audio_offset, "speech"),
                layout.special_id("<|end_of_audio|>")]
      elif piece == AUDIO_TAG:
        n = int(take("audio_slot_counts", slot_counts))
        out.append(layout.special_id("<|begin_of_audio|>"))
        slots.extend(range(start + len(out), start + len(out) + n))
        out += [layout.special_id("<|context_of_audio|>")] * n + [layout.special_id("<|end_of_audio|>")]
      elif piece:
        out += tokenizer.encode(piece, add_special_tokens=False).ids
    return out

  for message in messages:
    role, content = message["role"], message["content"]
    if role not in ("system", "user", "assistant"):
      raise ValueError(f"unknown role {role!r}; expected system, user or assistant")
    header = [layout.im_start_id, *tokenizer.encode(role, add_special_tokens=False).ids, *nl]
    if join_role_line:
      if role == "assistant":
        raise ValueError("join_role_line is for prompts without targets; got an assistant turn")
      lead = _PLACEHOLDER.split(content, maxsplit=1)[0]
      header = [layout.im_start_id, *tokenizer.encode(f"{role}\n{lead}", add_special_tokens=False).ids]
      content = content[len(lead):]
    body = content_ids(role, content, len(ids) + len(header)) + [layout.im_end_id, *nl]
    ids += header + body
    target += [False] * len(header) + [role == "assistant"] * len(body)
  if add_generation_prompt:
    ids += [layout.im_start_id, *tokenizer.encode("assistant", add_special_tokens=False).ids, *nl]
    target += [False] * (len(ids) - len(target))
  for kind, pool in (("images", images), ("audio_slot_counts", slot_counts), ("speech_codes", speech)):
    if counts[kind] != len(pool):
      raise ValueError(f"{len(pool)} {kind} given but only {counts[kind]} matching placeholders in the messages")
  return ChatExample(np.asarray(ids, np.int32), np.asarray(target, bool), np.asarray(slots, np.int32))


@dataclasses.dataclass(frozen=True)
class GeneratedOutput:
  """text_ids: (T,) text ids before the first <|im_end|> / <|endoftext|> (mask ids dropped); text: their
  decoding (None without a tokenizer); image_codes / speech_codes: (I,) / (S,) codes of every image /
  speech id in the sequence, in order."""
  text_ids: np.ndarray
  text: str | None
  image_codes: np.ndarray
  speech_codes: np.ndarray


def split_generated(ids: Sequence[int] | np.ndarray, layout: VocabLayout,
                    tokenizer: tokenizers.Tokenizer | None = None) -> GeneratedOutput:
  """Inverse of the expansion for a generated region: ids (L,) -> text, image codes and speech codes."""
  ids = np.asarray(ids, np.int64).reshape(-1)
  stops = np.flatnonzero((ids == layout.im_end_id) | (ids == layout.eos_id))
  head = ids[: stops[0]] if stops.size else ids
  text_ids = head[(head < layout.text_size) & (head != layout.mask_id)].astype(np.int32)
  is_image = (ids >= layout.image_offset) & (ids < layout.image_offset + layout.num_image_codes)
  is_speech = (ids >= layout.audio_offset) & (ids < layout.audio_offset + layout.num_audio_codes)
  text = None if tokenizer is None else tokenizer.decode(text_ids.tolist(), skip_special_tokens=True)
  return GeneratedOutput(text_ids, text, (ids[is_image] - layout.image_offset).astype(np.int32),
                         (ids[is_speech] - layout.audio_offset).astype(np.int32))
