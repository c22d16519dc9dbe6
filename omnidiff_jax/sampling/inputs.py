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
    data.encode.IMAGE_GRID['user']) -> 32 x 32 = 1024 MAGVIT-v2 codes, expanded as
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

from omnidiff_jax import chat, media_tokenizers, tasks
from omnidiff_jax.sampling import api, presets
from omnidiff_jax.vocab import VocabLayout

if TYPE_CHECKING:
  from omnidiff_jax.media_tokenizers import SpeechFeaturizer
  from omnidiff_jax.models.speech_in.adapter import AudioProjector

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
  """User speech -> backbone-space features: the SenseVoice front end and frozen encoder (a
  media_tokenizers.SpeechFeaturizer, as the data pipeline uses), then the projector."""
  featurizer: SpeechFeaturizer
  projector: AudioProjector

  def features(self, path: str) -> np.ndarray:
    """Audio file -> LFR frames (T_lfr, frontend.feature_dim) float32 (channels averaged, as upstream)."""
    from omnidiff_jax.data import media
    wave, rate = media.read_audio(path)  # BadSample (a ValueError) names a missing / undecodable file
    try:
      return self.featurizer.frames(wave.mean(axis=1), rate)
    except ValueError as e:  # BadAudioError
      raise ValueError(f"audio '{path}': {e}") from e

  def __call__(self, path: str) -> np.ndarray:
    """Audio file -> (T_lfr + 4, hidden) float32: one projected row per <|context_of_audio|> slot."""
    import jax.numpy as jnp

    from omnidiff_jax.models.speech_in import sensevoice
    encoded = sensevoice.encode_features(self.featurizer.encoder, [self.features(path)])[0]
    # The projector is row by row: rows padded per bucket compile once per bucket, not once per clip length.
    projected = self.projector(jnp.asarray(sensevoice.pad_rows(encoded)))
    return np.asarray(projected, np.float32)[:len(encoded)]


def load_speech_encoder(cfg, *, projector: AudioProjector | None = None, projector_params: str | None = None,
                        sensevoice_params: str | None = None, sensevoice_tensors: dict[str, np.ndarray] | None = None,
                        cmvn_file: str = "", seed: int = 0) -> SpeechEncoder:
  """A SpeechEncoder for a speech config (configs/sensevoice.py: frontend, encoder, projector sections).

  projector: the backbone's own (DreamModel.audio_projection of a converted Omni or a training checkpoint),
  unless projector_params (our parameter file) is given; without either, a random one (with a warning). The
  SenseVoice encoder: media_tokenizers.SpeechFeaturizer.from_config with sensevoice_params (our parameter file)
  or sensevoice_tensors (the checkpoint's SenseVoice tensors by HF name, checkpoints.load_extra), else random
  (with a warning). cmvn_file: SenseVoiceSmall's am.mvn. Raises CheckpointMismatchError (a ValueError).
  """
  from omnidiff_jax.models.speech_in import params as speech_in
  featurizer = media_tokenizers.SpeechFeaturizer.from_config(
      cfg, sensevoice_params or sensevoice_tensors, cmvn_file, seed)
  if projector is None or projector_params:
    projector = speech_in.model_for("projector", cfg)
    if projector_params:
      speech_in.load_params(projector, projector_params)
    else:
      warnings.warn("no projector weights: user speech goes through a random projector (demo only)", stacklevel=2)
      speech_in.fill_random(projector, seed)
  return SpeechEncoder(featurizer, projector)


def load_image_tokenizer(config_spec: str, weights: str | None = None, seed: int = 0
                         ) -> media_tokenizers.ImageTokenizer:
  """MAGVIT-v2 of a config file[:arg] (configs/magvit.py) with our / torch weights, or random weights with a
  warning when `weights` is None."""
  return media_tokenizers.ImageTokenizer.from_config(config_spec, weights, seed)


def encode_images(image_tokenizer: media_tokenizers.ImageTokenizer, paths: Sequence[str], vocab: VocabLayout,
                  resolution: int | None = None) -> np.ndarray:
  """Image files -> MAGVIT-v2 codes (N, (resolution / f) ** 2) int32, checked against the vocabulary.
  resolution: the square side after resize + center crop; None = a user image's (32 x 32 = 1024 codes: 512 px
  for MAGVIT-v2)."""
  from omnidiff_jax.data.encode import IMAGE_GRID
  resolution = IMAGE_GRID["user"] * image_tokenizer.image_downsample if resolution is None else resolution
  codes = image_tokenizer.encode_files(paths, resolution)
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


def _messages(task: str, text: str = "", as_trained: bool = False) -> list[dict[str, str]]:
  chat_task = CHAT_TASKS[task]
  messages = chat.task_messages(chat_task, text)
  if chat_task in INFERENCE_USER_TURNS and not as_trained:
    messages[-1] = dict(role="user", content=INFERENCE_USER_TURNS[chat_task])
  return messages


def uncond_prompt(task: str, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer, as_trained: bool = False
                  ) -> np.ndarray:
  """CFG unconditional prompt ids (Pu,) of a preset, by its uncond rule (tasks.UNCOND_RULES): 'empty_user' is
  the task's system turn, an empty user turn and the generation prompt. as_trained: see build_prompts."""
  rule = presets.PRESETS[task].uncond
  if rule != "empty_user":
    raise ValueError(f"preset {task!r} has no rule for a CFG unconditional prompt (uncond={rule!r})")
  messages = _messages(task)[:-1] + [dict(role="user", content="")]
  return chat.build_chat(messages, vocab, tokenizer, add_generation_prompt=True, join_role_line=not as_trained).ids


def build_prompts(task: str, vocab: VocabLayout, tokenizer: tokenizers.Tokenizer, *,
                  texts: Sequence[str] | None = None, images: Sequence[str] | None = None,
                  wavs: Sequence[str] | None = None, image_tokenizer=None, speech_encoder: SpeechEncoder | None = None,
                  image_resolution: int | None = None, cfg_scale: float | None = None,
                  as_trained: bool = False) -> Prompts:
  """Prompts of a batch: one text / image file / speech file per row, as TASK_INPUTS[task] lists.

  image_tokenizer: a media_tokenizers.ImageTokenizer (load_image_tokenizer) for images, encoded at
  image_resolution (None: 1024 codes, upstream's 512 px for MAGVIT-v2); speech_encoder: a SpeechEncoder
  (load_speech_encoder) for speech. cfg_scale: the sampler's (None: the preset's); with cfg_scale > 0, presets
  with an unconditional-prompt rule (s2i) get one. as_trained: build the prompt exactly as the training data
  encodes it (omnidiff_jax.data.encode: the training template's user turn, e.g. s2i's "<|audio|>" instead of
  upstream inference's "\n<|audio|>", and each role line tokenized apart), for a model trained on manifests
  in the training format (the demo); default: upstream's inference prompts.
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
    example = chat.build_chat(_messages(task, texts[row] if texts else "", as_trained), vocab, tokenizer,
                              images=[codes[row]] if images else (),
                              audio_slot_counts=[len(features[row])] if wavs else (), add_generation_prompt=True,
                              join_role_line=not as_trained)
    ids.append(example.ids)
    slots.append(example.audio_slots)
  preset = presets.PRESETS[task]
  cfg_scale = preset.sampler.get("cfg_scale", 0.0) if cfg_scale is None else cfg_scale
  uncond = uncond_prompt(task, vocab, tokenizer, as_trained) if preset.uncond and cfg_scale > 0 else None
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
