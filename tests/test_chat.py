"""ChatML builder for the upstream tasks and the inverse split, on a BPE trained inside the test."""
import numpy as np
import pytest

import tiny_tokenizer
from omnidiff_jax.chat import TASKS, build_chat, split_generated, task_messages

LAYOUT = tiny_tokenizer.layout()
TOK = tiny_tokenizer.build(LAYOUT)
RNG = np.random.default_rng(0)
HEADER = len(TOK.encode("<|im_start|>assistant\n", add_special_tokens=False).ids)
IMG_A = RNG.integers(0, LAYOUT.num_image_codes, 16).tolist()
SPEECH_A = RNG.integers(0, LAYOUT.num_audio_codes, 11).tolist()

# task -> (text, answer, images, user audio slot counts, assistant speech codes)
CASES = {
    "text": ("Name a red fruit.", "an apple", [], [], []),
    "asr": ("", "the quick brown fox", [], [7], []),
    "tts": ("a red bus at night", "", [], [], [SPEECH_A]),
    "t2i": ("a red bus at night", "", [IMG_A], [], []),
    "s2i": ("", "", [IMG_A], [5], []),
    "vqa": ("What is shown in the picture?", "a bus", [IMG_A], [], []),
    "svqa": ("", "a red bus", [IMG_A], [9], [SPEECH_A]),
    "sqa": ("", "the river bank", [], [4], [SPEECH_A]),
}


def _expanded_string(messages, images, slot_counts, speech):
  """What upstream tokenizes: the ChatML string with every placeholder spelled out as tokens."""
  images, slot_counts, speech = list(images), list(slot_counts), list(speech)
  out = ""
  for m in messages:
    content = m["content"]
    while "<|image|>" in content:
      codes = "".join(f"<|image_{c}|>" for c in images.pop(0))
      content = content.replace("<|image|>", f"<|begin_of_image|>{codes}<|end_of_image|>", 1)
    while "<|audio|>" in content:
      if m["role"] == "assistant":
        inner = "".join(f"<|audio_{c}|>" for c in speech.pop(0))
      else:
        inner = "<|context_of_audio|>" * slot_counts.pop(0)
      content = content.replace("<|audio|>", f"<|begin_of_audio|>{inner}<|end_of_audio|>", 1)
    out += f"<|im_start|>{m['role']}\n{content}<|im_end|>\n"
  return out


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_prompt_matches_upstream_expansion(task):
  text, answer, images, slots, speech = CASES[task]
  messages = task_messages(task, text=text, answer=answer)
  ex = build_chat(messages, LAYOUT, TOK, images=images, audio_slot_counts=slots, speech_codes=speech)
  expanded = _expanded_string(messages, images, slots, speech)
  np.testing.assert_array_equal(ex.ids, TOK.encode(expanded, add_special_tokens=False).ids)
  assert ex.ids.dtype == np.int32 and ex.target_mask.shape == ex.ids.shape
  # Targets: exactly the assistant content, its <|im_end|> and the newline.
  assistant_content = _expanded_string(messages[-1:], images[-1:] if "<|image|>" in messages[-1]["content"] else [],
                                       [], speech)
  target_text = TOK.decode(ex.ids[ex.target_mask].tolist(), skip_special_tokens=False)
  assert target_text == assistant_content.removeprefix("<|im_start|>assistant\n")
  first = np.flatnonzero(ex.target_mask)[0]
  assert TOK.decode(ex.ids[first - HEADER:first].tolist(), skip_special_tokens=False) == "<|im_start|>assistant\n"
  assert np.all(np.flatnonzero(ex.target_mask) == np.arange(first, len(ex.ids)))
  # Feature slots of the user audio.
  ctx = LAYOUT.special_id("<|context_of_audio|>")
  assert len(ex.audio_slots) == sum(slots)
  np.testing.assert_array_equal(np.flatnonzero(ex.ids == ctx), ex.audio_slots)
  if slots:
    assert ex.ids[ex.audio_slots[0] - 1] == LAYOUT.special_id("<|begin_of_audio|>")
    assert ex.ids[ex.audio_slots[-1] + 1] == LAYOUT.special_id("<|end_of_audio|>")


def test_generation_prompt_has_no_targets():
  ex = build_chat(task_messages("asr"), LAYOUT, TOK, audio_slot_counts=[3], add_generation_prompt=True)
  assert not ex.target_mask.any()
  assert TOK.decode(ex.ids[-HEADER:].tolist(), skip_special_tokens=False) == "<|im_start|>assistant\n"
  np.testing.assert_array_equal(ex.audio_slots, np.arange(3) + np.flatnonzero(
      ex.ids == LAYOUT.special_id("<|begin_of_audio|>"))[0] + 1)


def test_two_audios_and_image_in_one_user_turn():
  messages = [dict(role="user", content="<|audio|> and <|audio|>\n<|image|>")]
  ex = build_chat(messages, LAYOUT, TOK, audio_slot_counts=[2, 3], images=[[1, 2]])
  ctx = LAYOUT.special_id("<|context_of_audio|>")
  assert len(ex.audio_slots) == 5 and np.all(ex.ids[ex.audio_slots] == ctx)
  assert ex.audio_slots[2] - ex.audio_slots[1] > 1  # two separate runs


def test_split_generated_inverts_the_assistant_turn():
  text, answer, images, slots, speech = CASES["svqa"]
  ex = build_chat(task_messages("svqa", answer=answer), LAYOUT, TOK, images=images, audio_slot_counts=slots,
                  speech_codes=speech)
  out = split_generated(ex.ids[ex.target_mask], LAYOUT, TOK)
  assert out.text == answer + "\n"
  np.testing.assert_array_equal(out.speech_codes, SPEECH_A)
  assert out.image_codes.size == 0
  gen = build_chat(task_messages("t2i", text="x", answer=""), LAYOUT, TOK, images=[IMG_A])
  region = gen.ids[gen.target_mask].copy()
  region[3] = LAYOUT.mask_id  # an unfilled position is ignored
  got = split_generated(region, LAYOUT)
  np.testing.assert_array_equal(got.image_codes, np.delete(np.asarray(IMG_A), 2))
  assert got.text is None and got.text_ids.size == 0


def test_bad_inputs():
  with pytest.raises(ValueError, match="more placeholders than images"):
    build_chat(task_messages("vqa", text="q", answer="a"), LAYOUT, TOK)
  with pytest.raises(ValueError, match="2 audio_slot_counts given but only 1"):
    build_chat(task_messages("asr", answer="a"), LAYOUT, TOK, audio_slot_counts=[3, 4])
  with pytest.raises(ValueError, match=r"image codes must lie in \[0, 32\)"):
    build_chat(task_messages("t2i", text="c", answer=""), LAYOUT, TOK, images=[[40]])
  with pytest.raises(ValueError, match="unknown task"):
    task_messages("ocr")


def test_join_role_line_tokenizes_like_the_whole_string():
  """Upstream's S2I inference prompt has the user turn '\\n<|audio|>': 'user\\n\\n' is one BPE span there."""
  tok = tiny_tokenizer.build(LAYOUT, corpus=tiny_tokenizer.CORPUS + ["user\n\n"] * 50)
  assert len(tok.encode("\n\n", add_special_tokens=False).ids) == 1
  messages = [dict(role="system", content=TASKS["s2i"][0]), dict(role="user", content="\n<|audio|>")]
  joined = build_chat(messages, LAYOUT, tok, audio_slot_counts=[3], add_generation_prompt=True, join_role_line=True)
  whole = _expanded_string(messages, [], [3], []) + "<|im_start|>assistant\n"
  np.testing.assert_array_equal(joined.ids, tok.encode(whole, add_special_tokens=False).ids)
  context = LAYOUT.special_id("<|context_of_audio|>")
  assert (joined.ids[joined.audio_slots] == context).all() and len(joined.audio_slots) == 3
  apart = build_chat(messages, LAYOUT, tok, audio_slot_counts=[3], add_generation_prompt=True)
  assert len(apart.ids) == len(joined.ids) + 1   # '\\n', '\\n' instead of '\\n\\n'
  with pytest.raises(ValueError, match="join_role_line"):
    build_chat(task_messages("asr", answer="a"), LAYOUT, tok, audio_slot_counts=[3], join_role_line=True)
