"""The task-level sampler: a preset's defaults (omnidiff_jax.tasks: region-length rule, steps, penalties, CFG),
generate_task(), and the split of a filled region into text ids / image codes / speech codes."""
from __future__ import annotations

import numpy as np

from omnidiff_jax import tasks
from omnidiff_jax.sampling import api
from omnidiff_jax.sampling.schedule import SamplerConfig
from omnidiff_jax.vocab import VocabLayout

IMAGE_TOKENS = 256  # 16 x 16 MAGVIT-v2 codes of a 256 px image
# Preset name -> tasks.Preset, over all registered tasks (a live view).
PRESETS = tasks.LiveMapping(lambda: {name: preset for name, (_, preset) in tasks.presets().items()})


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
