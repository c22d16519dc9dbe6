"""Task presets (reference notes section 4.3) and the split of a filled region into modalities."""
import numpy as np
import pytest

from omnidiff_jax.sampling import split_outputs, task_config
from omnidiff_jax.vocab import VocabLayout


@pytest.mark.parametrize("task, prompt_len, text_len, region, steps, alg", [
    ("t2i", 40, None, 260, 260, "entropy-penalty"),
    ("s2i", 90, None, 260, 260, "entropy-penalty"),
    ("svqa", 90, None, 128, 128, "entropy-penalty"),
    ("vqa", 1040, None, 64, 64, "entropy"),
    ("mme", 1040, None, 8, 8, "entropy"),
    ("tts", 20, None, 50, 25, "entropy"),
    ("tts_eval", 20, 13, 45, 22, "entropy-penalty"),
    ("asr", 300, None, 50, 25, "entropy"),
    ("asr_eval", 301, None, 60, 30, "entropy"),
])
def test_task_lengths_and_algorithms(task, prompt_len, text_len, region, steps, alg):
  cfg, region_len = task_config(task, prompt_len, text_len)
  assert (region_len, cfg.steps, cfg.alg) == (region, steps, alg)
  assert cfg.temperature == 0.0 and cfg.top_p == 0.9


def test_task_specific_settings_and_overrides():
  t2i, _ = task_config("t2i", 40)
  assert (t2i.repetition_penalty, t2i.position_penalty, t2i.cfg_scale) == (1.2, 2.0, 0.0)
  s2i, _ = task_config("s2i", 40)
  assert (s2i.repetition_penalty, s2i.cfg_scale) == (1.5, 2.0)
  assert task_config("svqa", 40)[0].boa_fraction == 0.2
  assert task_config("asr_eval", 301)[0].block_size == 60
  fast, region = task_config("t2i", 40, steps=50, threshold=0.9, block_size=32, kv_cache=True, region_len=100)
  assert (fast.steps, fast.threshold, fast.kv_cache, region) == (50, 0.9, True, 100)
  with pytest.raises(ValueError, match="unknown task"):
    task_config("x2y", 4)
  with pytest.raises(ValueError, match="text_len"):
    task_config("tts_eval", 4)


def test_split_outputs(tiny_config):
  vocab = VocabLayout.from_config(tiny_config.vocab)
  tokens = np.array([5, 6, vocab.image_id(3), vocab.audio_id(7), vocab.image_id(9), vocab.im_end_id, 8,
                     vocab.audio_id(1)])
  out = split_outputs(tokens, vocab)
  assert out["text"].tolist() == [5, 6]
  assert out["image"].tolist() == [3] + [9] * 255
  assert out["speech"].tolist() == [7, 1]
  assert split_outputs(np.array([1, 2]), vocab)["image"].size == 0
