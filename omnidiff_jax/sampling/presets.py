"""Per-task sampler defaults from upstream's inference and eval scripts (reference notes section 4.3), the
task-level generate(), and the split of a filled region into text ids / image codes / speech codes.

All tasks use temperature 0 and top-p 0.9. Region lengths and steps:
  t2i, s2i: 260 / 260     svqa: 128 / 128     vqa: 64 / 64     mme: 8 / 8
  tts, asr (demo): 50 / 25
  tts_eval: int(3.5 * text tokens) / half     asr_eval: int(0.2 * prompt length) / half, one block
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from omnidiff_jax.sampling import api
from omnidiff_jax.sampling.schedule import SamplerConfig
from omnidiff_jax.vocab import VocabLayout

IMAGE_TOKENS = 256  # 16 x 16 MAGVIT-v2 codes of a 256 px image


@dataclasses.dataclass(frozen=True)
class TaskPreset:
  """prompt: upstream's user turn (ChatML-wrapped by the prompt builder); output: 'image', 'speech', 'text'
  or 'text+speech'; region_len(prompt_len, text_len) and steps(region_len) give the lengths; sampler: the
  remaining SamplerConfig fields; uncond: how upstream builds the CFG prompt (None = no CFG)."""
  prompt: str
  output: str
  region_len: Callable[[int, int | None], int]
  steps: Callable[[int], int]
  sampler: dict
  uncond: str | None = None


def _fixed(n: int) -> Callable[[int, int | None], int]:
  return lambda prompt_len, text_len: n


def _tts_eval_len(prompt_len: int, text_len: int | None) -> int:
  if text_len is None:
    raise ValueError("task 'tts_eval' needs text_len (tokens of the text to speak): region = int(3.5 * text_len)")
  return int(3.5 * text_len)


_SAME = lambda n: n  # noqa: E731
_HALF = lambda n: max(n // 2, 1)  # noqa: E731
_GREEDY = dict(temperature=0.0, top_p=0.9)

PRESETS: dict[str, TaskPreset] = {
    "t2i": TaskPreset(
        "Generate an image based on the provided text description.\n{caption}", "image", _fixed(260), _SAME,
        dict(_GREEDY, alg="entropy-penalty", repetition_penalty=1.2, position_penalty=2.0)),
    "s2i": TaskPreset(
        "system: Please generate an image based on the input audio.; user: <|audio|>", "image", _fixed(260),
        _SAME, dict(_GREEDY, alg="entropy-penalty", repetition_penalty=1.5, position_penalty=2.0, cfg_scale=2.0),
        uncond="the system turn with an empty user turn"),
    "svqa": TaskPreset(
        "system: Please response the input audio based on the given image.; user: <|audio|>\n<|image|>",
        "text+speech", _fixed(128), _SAME,
        dict(_GREEDY, alg="entropy-penalty", repetition_penalty=1.2, boa_fraction=0.2)),
    "vqa": TaskPreset("{question}\n<|image|>", "text", _fixed(64), _SAME, dict(_GREEDY, alg="entropy")),
    "mme": TaskPreset("{question}\n<|image|>", "text", _fixed(8), _SAME, dict(_GREEDY, alg="entropy")),
    "tts": TaskPreset("Convert the text to speech.\n{text}", "speech", _fixed(50), _HALF,
                      dict(_GREEDY, alg="entropy")),
    "tts_eval": TaskPreset("Convert the text to speech.\n{text}", "speech", _tts_eval_len, _HALF,
                           dict(_GREEDY, alg="entropy-penalty", repetition_penalty=1.2)),
    "asr": TaskPreset("Convert the speech to text.\n<|audio|>", "text", _fixed(50), _HALF,
                      dict(_GREEDY, alg="entropy")),
    "asr_eval": TaskPreset("Convert the speech to text.\n<|audio|>", "text",
                           lambda prompt_len, text_len: max(int(0.2 * prompt_len), 1), _HALF,
                           dict(_GREEDY, alg="entropy", block_size="region")),
}


def task_config(task: str, prompt_len: int, text_len: int | None = None, **overrides
                ) -> tuple[SamplerConfig, int]:
  """SamplerConfig and region length of a task; overrides replace any SamplerConfig field or region_len."""
  if task not in PRESETS:
    raise ValueError(f"unknown task {task!r}; choose one of {sorted(PRESETS)}")
  preset = PRESETS[task]
  region_len = overrides.pop("region_len", None) or preset.region_len(prompt_len, text_len)
  fields = dict(preset.sampler, steps=preset.steps(region_len))
  if fields.get("block_size") == "region":
    fields["block_size"] = region_len
  fields.update(overrides)
  return SamplerConfig(**fields), region_len


def generate_task(model, vocab: VocabLayout, task: str, *, prompt_ids=None, prompt_mask=None, prompt_embeds=None,
                  text_len: int | None = None, uncond_ids=None, seed: int = 0, **overrides):
  """The sampler with a task's defaults. Inputs as in api.generate (prompts already in ChatML ids or
  embeddings; with CFG pass uncond_ids; inputs.generate_from_inputs builds prompts, s2i's unconditional one
  included, from texts / image files / speech files). Returns (SampleResult, SamplerConfig)."""
  if prompt_embeds is not None:
    prompt_len = prompt_embeds.shape[1]
  else:
    prompt_ids, prompt_mask = api.as_padded(prompt_ids, prompt_mask, vocab.pad_id, "prompt_ids")
    prompt_len = prompt_ids.shape[1]  # asr_eval: the padded length when prompts differ
  cfg, region_len = task_config(task, prompt_len, text_len, **overrides)
  result = api.generate(model, cfg, vocab, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                        prompt_embeds=prompt_embeds, region_len=region_len, uncond_ids=uncond_ids, seed=seed)
  return result, cfg


def split_outputs(tokens: np.ndarray, vocab: VocabLayout) -> dict[str, np.ndarray]:
  """Splits one filled region (G,) into modalities, as upstream's post-processing does.

  text: the ids before the first <|im_end|> / <|endoftext|>; image: the image codes (0-based), padded by
  repeating the last one to IMAGE_TOKENS and cut to it (empty if none); speech: the speech codes (0-based).
  """
  tokens = np.asarray(tokens)
  stops = np.nonzero((tokens == vocab.im_end_id) | (tokens == vocab.eos_id))[0]
  text = tokens[:stops[0] if len(stops) else len(tokens)]
  text = text[text < vocab.text_size]
  image = tokens[(tokens >= vocab.image_offset) & (tokens < vocab.image_offset + vocab.num_image_codes)]
  image = image - vocab.image_offset
  if len(image):
    image = np.concatenate([image, np.full(max(IMAGE_TOKENS - len(image), 0), image[-1])])[:IMAGE_TOKENS]
  speech = tokens[(tokens >= vocab.audio_offset) & (tokens < vocab.audio_offset + vocab.num_audio_codes)]
  return {"text": text, "image": image.astype(np.int32), "speech": (speech - vocab.audio_offset).astype(np.int32)}
