"""The task registry (omnidiff_jax.tasks) and the tables derived from it."""
import pytest

from omnidiff_jax import chat, tasks
from omnidiff_jax.data import interfaces, stages, synthetic
from omnidiff_jax.sampling import inputs, presets
from omnidiff_jax.training import batch as batchlib


def test_ids_keep_the_loss_log_order():
  assert tasks.names() == ("text", "asr", "tts", "t2i", "s2i", "svqa", "sqa", "vqa")
  assert [spec.id for spec in tasks.specs()] == list(range(len(tasks.names())))
  assert interfaces.TASKS == batchlib.TASKS == tasks.names() and interfaces.TASKS.index("vqa") == 7


def test_derived_tables():
  """The tables that used to be written out by hand, now derived from the TaskSpecs."""
  assert stages.USER_SPEECH_SOURCES == ("asr", "s2i", "svqa", "sqa")
  assert {name: stages.SOURCE_TASKS[name] for name in stages.SOURCE_SIZES_K} == {
      **{name: name for name in stages.SOURCE_SIZES_K}, "caption": "vqa"}
  assert dict(synthetic.TASK_MODALITIES)["vqa"] == ("image", "text")
  assert dict(synthetic.TASK_MODALITIES)["svqa"] == ("audio", "audio")
  assert set(inputs.TASK_INPUTS) == set(presets.PRESETS) == set(inputs.CHAT_TASKS)
  assert dict(inputs.CHAT_TASKS) == {"asr": "asr", "asr_eval": "asr", "tts": "tts", "tts_eval": "tts", "t2i": "t2i",
                                     "s2i": "s2i", "svqa": "svqa", "sqa": "sqa", "vqa": "vqa", "mme": "vqa"}
  assert inputs.TASK_INPUTS["svqa"] == ("wav", "image") and inputs.TASK_INPUTS["mme"] == ("image", "text")
  assert dict(inputs.INFERENCE_USER_TURNS) == {"s2i": "\n<|audio|>", "sqa": "\n<|audio|>"}
  assert chat.TASKS["asr"] == (None, "Convert the speech to text.\n<|audio|>", "{answer}")
  assert {spec.name: spec.metric for spec in tasks.specs()} == {
      "text": None, "asr": "wer", "tts": "wer", "t2i": "clip", "s2i": "clip", "svqa": "accuracy", "sqa": "accuracy",
      "vqa": "accuracy"}


def test_preset_length_rules():
  cfg, region = presets.task_config("tts_eval", prompt_len=40, text_len=10)
  assert region == 35 and cfg.steps == 17 and cfg.repetition_penalty == 1.2
  cfg, region = presets.task_config("asr_eval", prompt_len=101)
  assert region == 20 and cfg.block_size == 20 and cfg.steps == 10
  cfg, region = presets.task_config("s2i", prompt_len=9)
  assert (region, cfg.steps, cfg.cfg_scale, presets.PRESETS["s2i"].uncond) == (260, 260, 2.0, "empty_user")
  with pytest.raises(ValueError, match="needs text_len"):
    presets.task_config("tts_eval", prompt_len=40)


def test_register_checks_and_live_views():
  spec = tasks.TaskSpec("s2s", tasks.next_id(), ("Answer the speech with speech.", "<|audio|>", "<|audio|>"),
                        ("audio",), ("audio",))
  with pytest.raises(ValueError, match="next free id"):
    tasks.register(tasks.TaskSpec("late", 99, (None, "{text}", "{answer}"), ("text",), ("text",)))
  with pytest.raises(ValueError, match="already registered"):
    tasks.register(tasks.get("asr"))
  with pytest.raises(ValueError, match="inputs and outputs must be"):
    tasks.TaskSpec("bad", 8, (None, "{text}", "{answer}"), ("video",), ("text",))
  with tasks.registered(spec):
    assert interfaces.TASKS[-1] == "s2s" and chat.TASKS["s2s"] == spec.chat and "s2s" in stages.USER_SPEECH_SOURCES
  assert "s2s" not in interfaces.TASKS and "s2s" not in chat.TASKS
