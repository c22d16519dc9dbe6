"""Task inputs (texts, image files, speech files) -> sampler prompts, formatted as upstream's inference does.

Upstream's demo (`tools/inference.py`, `S2SInference.run_infer`; every preset comes from it) builds the user
turn from the task message and the media:
  text only (t2i, tts, tts_eval):  "{message}"                message = the task prompt + the text
  image (vqa, mme):                "{question}\\n<|image|>"
  speech (asr, asr_eval, s2i):     "{message}\\n<|audio|>"     s2i has message "": the user turn is "\\n<|audio|>"
  speech + image (svqa):           "<|audio|>\\n<|image|>"
after the task's system turn (s2i, svqa), in ChatML with the generation prompt, tokenized as one string
(apply_chat_template; omnidiff_jax.chat.build_chat with join_role_line=True).
  Image: `process_images_with_subpatch(path, 512)`, i.e. upstream's image_transform at 512 px (a user image,
    data.encode.IMAGE_RESOLUTION['user']) -> 32 x 32 = 1024 MAGVIT-v2 codes, expanded as
    <|begin_of_image|> <|image_c|>... <|end_of_image|>.
  Speech (`add_audio_input_contiguous`): torchaudio load, channels averaged, resampled to 16 kHz (torchaudio's
    sinc method: audio_frontend.resample), WavFrontend (fbank + LFR + CMVN) -> in the model the frozen
    SenseVoice encoder (T_lfr + 4 rows) and the projector, whose rows overwrite the embeddings of the
    <|context_of_audio|> x (T_lfr + 4) slots.
  CFG (s2i, cfg 2.0; generation_utils.py, task 'S2I'): the unconditional prompt is the system turn, an empty
    user turn and the generation prompt. Upstream's T2I demo runs with cfg 0 (its generate() would use random
    caption ids), so t2i gets none here: with a cfg_scale override pass uncond_ids to presets.generate_task.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np
import tokenizers

from omnidiff_jax import chat, tasks
from omnidiff_jax.sampling import api, presets
from omnidiff_jax.vocab import VocabLayout

if TYPE_CHECKING:
  from omnidiff_jax.models.speech_in.adapter import AudioProjector
  from omnidiff_jax.models.speech_in.frontend import SenseVoiceFrontend
  from omnidiff_jax.models.speech_in.sensevoice import SenseVoiceEncoder

# Per preset (omnidiff_jax.tasks; live views): the inputs it takes (one of each per batch row) and the
# omnidiff_jax.chat template (task) it uses.
TASK_INPUTS = tasks.LiveMapping(lambda: {name: spec.inference_inputs for name, (spec, _) in tasks.presets().items()})
CHAT_TASKS = tasks.LiveMapping(lambda: {name: spec.name for name, (spec, _) in tasks.presets().items()})
# User turns where upstream's inference (tools/inference.py run_infer: message + "\n<|audio|>", message "" for
# S2I) differs from the training template (omnidiff_jax.chat.TASKS).
INFERENCE_USER_TURNS = tasks.LiveMapping(
    lambda: {spec.name: spec.inference_user for spec in tasks.specs() if spec.inference_user is not None})


def check_inputs(task: str, texts: Sequence[str] | None = None, images: Sequence[str] | None = None,
                 wavs: Sequence[str] | None = None) -> int:
  """Checks that `task` gets exactly its inputs (TASK_INPUTS), one of each per row, and that the files exist.
  Returns the batch size; raises ValueError / FileNotFoundError naming what is wrong."""
  if task not in TASK_INPUTS:
    raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_INPUTS)}")
  given = {name: list(values) for name, values in (("text", texts), ("image", images), ("wav", wavs)) if values}
  wanted = TASK_INPUTS[task]
  missing, extra = [n for n in wanted if n not in given], [n for n in given if n not in wanted]
  if missing or extra:
    problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra)
    raise ValueError(f"task {task} takes {' + '.join(wanted)} (one of each per batch row): {'; '.join(problems)}")
  counts = {name: len(values) for name, values in given.items()}
  if len(set(counts.values())) != 1:
    raise ValueError(f"task {task} needs one of each input per batch row, got {counts}")
  for kind in ("image", "wav"):
    absent = [p for p in given.get(kind, []) if not os.path.isfile(p)]
    if absent:
      raise FileNotFoundError(f"no such {kind} file(s): {', '.join(absent)}")
  return next(iter(counts.values()))


@dataclasses.dataclass
class SpeechEncoder:
  """User speech -> backbone-space features: WavFrontend, the frozen SenseVoice encoder, the projector.
  rng: the dither noise source (when frontend.fbank.dither > 0)."""
  frontend: SenseVoiceFrontend
  encoder: SenseVoiceEncoder
  projector: AudioProjector
  rng: np.random.Generator | None = None

  def features(self, path: str) -> np.ndarray:
    """Audio file -> LFR frames (T_lfr, frontend.feature_dim) float32 (channels averaged, as upstream)."""
    from omnidiff_jax.data import media
    from omnidiff_jax.models.speech_in.frontend import BadAudioError
    wave, rate = media.read_audio(path)  # BadSample (a ValueError) names a missing / undecodable file
    try:
      return self.frontend(wave.mean(axis=1), rate, self.rng)
    except BadAudioError as e:
      raise ValueError(f"audio '{path}': {e}") from e

  def __call__(self, path: str) -> np.ndarray:
    """Audio file -> (T_lfr + 4, hidden) float32: one projected row per <|context_of_audio|> slot."""
    import jax.numpy as jnp

    from omnidiff_jax.models.speech_in import sensevoice
    encoded = sensevoice.encode_features(self.encoder, [self.features(path)])[0]
    return np.asarray(self.projector(jnp.asarray(encoded)), np.float32)


def load_speech_encoder(cfg, *, extra: dict[str, np.ndarray] | None = None, sensevoice_params: str | None = None,
                        projector_params: str | None = None, projector: AudioProjector | None = None,
                        cmvn_file: str = "", seed: int = 0) -> SpeechEncoder:
  """A SpeechEncoder for a speech config (configs/sensevoice.py: frontend, encoder, projector sections).

  Each network's weights come from our parameter file (sensevoice_params / projector_params, written by
  tools/speech_tokenize.py convert), else from `extra`: the converted Omni checkpoint's carried-through tensors
  by HF name (omnidiff_jax.checkpoints.load_extra; prefixes are found and stripped), else from a deterministic
  random init (with a warning: the random-model demo). projector: the backbone's own trained projector
  (DreamModel.audio_projection of a training checkpoint), used unless projector_params is given.
  cmvn_file: SenseVoiceSmall's am.mvn (overrides cfg.frontend.cmvn_file). Raises CheckpointMismatchError (a
  ValueError) listing what does not fit.
  """
  from omnidiff_jax.models.speech_in import params as speech_in
  from omnidiff_jax.models.speech_in import frontend as audio_frontend
  nets = {}
  for kind, params, load in (("sensevoice", sensevoice_params, speech_in.load_sensevoice),
                             ("projector", projector_params, speech_in.load_projector)):
    if kind == "projector" and projector is not None and not params:
      nets[kind] = projector
      continue
    nets[kind] = speech_in.model_for(kind, cfg)
    if params:
      speech_in.load_params(nets[kind], params)
    elif extra is not None:
      load(nets[kind], extra)
    else:
      warnings.warn(f"no {kind} weights: user speech goes through a random {kind} (demo only)", stacklevel=2)
      speech_in.fill_random(nets[kind], seed)
  frontend = audio_frontend.SenseVoiceFrontend.from_config(cfg.frontend, cmvn_file)
  if frontend.cmvn is None and (extra is not None or sensevoice_params):
    warnings.warn("no CMVN file (SenseVoiceSmall's am.mvn): speech features differ from upstream's", stacklevel=2)
  rng = np.random.default_rng(seed) if cfg.frontend.dither else None
  return SpeechEncoder(frontend, nets["sensevoice"], nets["projector"], rng)


def load_image_tokenizer(config_spec: str, weights: str | None = None, seed: int = 0):
  """MAGVIT-v2 (a MagvitV2) of a config file[:arg] (configs/magvit.py) with our / torch weights, or random
  weights with a warning when `weights` is None."""
  from omnidiff_jax.models.magvit import params as magvit_ckpt
  from omnidiff_jax.config import load_config_file
  model_cfg = load_config_file(config_spec).model
  if weights is None:
    warnings.warn("no MAGVIT-v2 weights: images go through a random MAGVIT-v2 (demo only)", stacklevel=2)
    return magvit_ckpt.random_model(model_cfg, seed)
  return magvit_ckpt.load_magvit(model_cfg, weights)


def encode_images(image_tokenizer, paths: Sequence[str], vocab: VocabLayout, resolution: int | None = None
                  ) -> np.ndarray:
  """Image files -> MAGVIT-v2 codes (N, (resolution / f) ** 2) int32, checked against the vocabulary.
  resolution: the square side after resize + center crop; None = a user image's (512 -> 1024 codes)."""
  from omnidiff_jax.data.encode import IMAGE_RESOLUTION
  from omnidiff_jax.models.magvit import preprocess as image_processing
  resolution = IMAGE_RESOLUTION["user"] if resolution is None else resolution
  codes = image_processing.encode_files(image_tokenizer, paths, resolution, batch_size=min(len(paths), 8))
  if codes.max() >= vocab.num_image_codes:
    raise ValueError(f"MAGVIT-v2 codes of {', '.join(paths)} reach {codes.max()}, but the vocabulary has "
                     f"{vocab.num_image_codes} image codes (config vocab.num_image_codes)")
  return codes


@dataclasses.dataclass(frozen=True)
class Prompts:
  """The sampler prompts of a batch of task inputs.

  ids: B (P_b,) int32 ChatML prompt ids with the media expanded and the generation prompt; audio_slots: B
  (S_b,) positions of the <|context_of_audio|> slots in ids[b]; features: B (S_b, D) float32 projected speech
  features (None without speech); uncond: (Pu,) int32 CFG unconditional prompt ids or None; text_len: BPE
  tokens of the first text (tts_eval's region rule) or None.
  """
  ids: list[np.ndarray]
  audio_slots: list[np.ndarray]
  features: list[np.ndarray | None]
  uncond: np.ndarray | None
  text_len: int | None


def _messages(task: str, text: str = "") -> list[dict[str, str]]:
  chat_task = CHAT_TASKS[task]
  messages = chat.task_messages(chat_task, text)
  if chat_task in INFERENCE_USER_TURNS:
    messages[-1] = dict(role="user", content=INFERENCE_USER_TURNS[chat_task])
  return messages


def uncond_prompt(task: str, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer) -> np.ndarray:
  """CFG unconditional prompt ids (Pu,) of a preset, by its uncond rule (tasks.UNCOND_RULES): 'empty_user' is
  the task's system turn, an empty user turn and the generation prompt."""
  rule = presets.PRESETS[task].uncond
  if rule != "empty_user":
    raise ValueError(f"preset {task!r} has no rule for a CFG unconditional prompt (uncond={rule!r})")
  messages = _messages(task)[:-1] + [dict(role="user", content="")]
  return chat.build_chat(messages, vocab, tokenizer, add_generation_prompt=True, join_role_line=True).ids


def build_prompts(task: str, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer, *,
                  texts: Sequence[str] | None = None, images: Sequence[str] | None = None,
                  wavs: Sequence[str] | None = None, image_tokenizer=None, speech_encoder: SpeechEncoder | None = None,
                  image_resolution: int | None = None, cfg_scale: float | None = None) -> Prompts:
  """Prompts of a batch: one text / image file / speech file per row, as TASK_INPUTS[task] lists.

  image_tokenizer: a MagvitV2 (load_image_tokenizer) for images, encoded at image_resolution (None: upstream's
  512 px); speech_encoder: a SpeechEncoder (load_speech_encoder) for speech. cfg_scale: the sampler's (None:
  the preset's); with cfg_scale > 0 tasks whose preset has an upstream unconditional prompt (s2i) get one.
  """
  batch = check_inputs(task, texts, images, wavs)
  if images and image_tokenizer is None:
    raise ValueError(f"task {task} takes images: pass an image_tokenizer (MAGVIT-v2)")
  if wavs and speech_encoder is None:
    raise ValueError(f"task {task} takes speech: pass a speech_encoder (SenseVoice + projector)")
  codes = encode_images(image_tokenizer, images, vocab, image_resolution) if images else None
  features = [speech_encoder(path) for path in wavs] if wavs else [None] * batch
  ids, slots = [], []
  for row in range(batch):
    example = chat.build_chat(_messages(task, texts[row] if texts else ""), vocab, tokenizer,
                              images=[codes[row]] if images else (),
                              audio_slot_counts=[len(features[row])] if wavs else (), add_generation_prompt=True,
                              join_role_line=True)
    ids.append(example.ids)
    slots.append(example.audio_slots)
  preset = presets.PRESETS[task]
  cfg_scale = preset.sampler.get("cfg_scale", 0.0) if cfg_scale is None else cfg_scale
  uncond = uncond_prompt(task, vocab, tokenizer) if preset.uncond and cfg_scale > 0 else None
  text_len = len(tokenizer.encode(texts[0], add_special_tokens=False).ids) if texts else None
  return Prompts(ids, slots, features, uncond, text_len)


def generate_from_inputs(model, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer, task: str, *,
                         texts: Sequence[str] | None = None, images: Sequence[str] | None = None,
                         wavs: Sequence[str] | None = None, image_tokenizer=None,
                         speech_encoder: SpeechEncoder | None = None, image_resolution: int | None = None,
                         text_len: int | None = None, seed: int = 0, **overrides):
  """The task preset's sampler on raw inputs (see build_prompts); B rows of different lengths are left padded.

  Prompts with speech run as embeddings (api.embed_prompts), the others as ids. overrides: SamplerConfig
  fields or region_len (presets.task_config). Returns (SampleResult with tokens (B, G), SamplerConfig, Prompts).
  """
  prompts = build_prompts(task, vocab, tokenizer, texts=texts, images=images, wavs=wavs,
                          image_tokenizer=image_tokenizer, speech_encoder=speech_encoder,
                          image_resolution=image_resolution, cfg_scale=overrides.get("cfg_scale"))
  if wavs:
    embeds, mask = api.embed_prompts(model, prompts.ids, vocab.pad_id, prompts.features, prompts.audio_slots)
    inputs = dict(prompt_embeds=embeds, prompt_mask=mask)
  else:
    inputs = dict(prompt_ids=[ids.tolist() for ids in prompts.ids])
  result, cfg = presets.generate_task(
      model, vocab, task, text_len=prompts.text_len if text_len is None else text_len, seed=seed,
      uncond_ids=None if prompts.uncond is None else [prompts.uncond.tolist()], **inputs, **overrides)
  return result, cfg, prompts
