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
  assert dict(inputs.CHAT_TASKS) == {"text": "text", "asr": "asr", "asr_eval": "asr", "tts": "tts", "tts_eval": "tts", "t2i": "t2i",
                                     "s2i": "s2i", "svqa": "svqa", "sqa": "sqa", "vqa": "vqa", "mme": "vqa"}
  assert inputs.TASK_INPUTS["svqa"] == ("wav", "image") and inputs.TASK_INPUTS["mme"] == ("image", "text")
  assert dict(inputs.INFERENCE_USER_TURNS) == {"s2i": "\n<|audio|>", "sqa": "\n<|audio|>"}
  assert chat.TASKS["asr"] == (None, "Convert the speech to text.\n<|audio|>", "{answer}")
  assert {spec.name: spec.metric for spec in tasks.specs()} == {
      "text": "accuracy", "asr": "wer", "tts": "wer", "t2i": "clip", "s2i": "clip", "svqa": "accuracy", "sqa": "accuracy",
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


def test_a_task_registered_in_a_test_trains_and_samples(tmp_path):
  """A new task (speech in, speech out) defined only here: 2 training steps on synthetic data of its mixture,
  then its preset (region 12, half the steps, CFG with the 'empty_user' prompt) on a wav file."""
  import numpy as np
  import soundfile

  import tiny_tokenizer
  from configs import sensevoice_tiny, tiny
  from omnidiff_jax import checkpoints
  from omnidiff_jax import config as cfglib
  from omnidiff_jax.training import loop
  from omnidiff_jax.training.config import add_training_sections
  from omnidiff_jax.vocab import VocabLayout

  system = "Please answer the input audio with speech."
  spec = tasks.TaskSpec("s2s", tasks.next_id(), (system, "<|audio|>", "<|audio|>"), ("audio",), ("audio",),
                        presets=(tasks.Preset("s2s", tasks.fixed_length(12), tasks.half_steps,
                                              dict(tasks.GREEDY, alg="entropy", cfg_scale=1.5), uncond="empty_user"),),
                        metric="wer")
  vocab = tiny_tokenizer.layout()
  cfg = tiny.get_config()
  cfg.vocab = cfglib.vocab_config(text_size=vocab.text_size, num_specials=vocab.num_specials,
                                  num_audio_codes=vocab.num_audio_codes, num_image_codes=vocab.num_image_codes,
                                  size=vocab.size)
  cfg.model.vocab_size = vocab.size
  with tasks.registered(spec):
    cfg = add_training_sections(cfg, stage="test", learning_rate=1e-3, mixture={"s2s": 1.0, "text": 1.0}, steps=2,
                                global_rows=8, seq_len=64, warmup_steps=1)
    cfg.data.min_len, cfg.data.max_len = 3, 10
    cfg.checkpoint.async_save = False
    from omnidiff_jax.data import synthetic
    task_ids = next(synthetic.make_source(cfg))["task_ids"]
    assert spec.id in task_ids and set(np.unique(task_ids)) <= {0, spec.id}
    result = loop.train(cfg, str(tmp_path / "run"))
    assert result["step"] == 2 and np.isfinite(result["loss"])

    model, _ = checkpoints.load(tmp_path / "run" / "checkpoints")
    tokenizer = tiny_tokenizer.build(vocab)
    speech_cfg = sensevoice_tiny.get_config()
    with pytest.warns(UserWarning, match="random"):
      encoder = inputs.load_speech_encoder(speech_cfg, seed=0)
    wav = str(tmp_path / "q.wav")
    soundfile.write(wav, 0.3 * np.sin(np.arange(6400) / 8.0).astype(np.float32), 16000)
    out, sampler_cfg, prompts = inputs.generate_from_inputs(model, VocabLayout.from_config(cfg.vocab), tokenizer,
                                                            "s2s", wavs=[wav], speech_encoder=encoder)
    assert (sampler_cfg.steps, sampler_cfg.cfg_scale, out.tokens.shape) == (6, 1.5, (1, 12))
    assert tokenizer.decode(prompts.uncond.tolist(), skip_special_tokens=False) == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n")
  assert "s2s" not in presets.PRESETS
