"""Tokenizer loading and verification of every id of the vocab layout against tokenizer files."""
import json

import pytest
from configs import omni_7b

import tiny_tokenizer
from omnidiff_jax.vocab import VocabLayout, expected_tokens, load_tokenizer, verify_tokenizer


def _save(tok, directory):
  directory.mkdir()
  tok.save(str(directory / "tokenizer.json"))
  decoder = {str(i): {"content": t.content, "special": t.special} for i, t in tok.get_added_tokens_decoder().items()}
  (directory / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
  return directory


def test_expected_tokens_of_the_real_layout():
  want = expected_tokens(VocabLayout.from_config(omni_7b.get_config().vocab))
  assert len(want) == 5 + 21 + 16_384 + 8_192
  assert want[151643] == "<|endoftext|>" and want[151666] == "<|mask|>" and want[151645] == "<|im_end|>"
  assert want[151667] == "<|begin_of_image|>" and want[151687] == "<|audio|>"
  assert want[151688] == "<|audio_0|>" and want[168071] == "<|audio_16383|>"
  assert want[168072] == "<|image_0|>" and want[176263] == "<|image_8191|>"


def test_matching_tokenizer_verifies_and_loads(tmp_path):
  layout = tiny_tokenizer.layout()
  directory = _save(tiny_tokenizer.build(layout), tmp_path / "tok")
  verify_tokenizer(layout, directory)                                  # both files
  verify_tokenizer(layout, directory / "tokenizer_config.json")
  tok = load_tokenizer(directory)
  assert tok.token_to_id("<|begin_of_audio|>") == layout.special_id("<|begin_of_audio|>")
  assert tok.encode("<|image_3|>", add_special_tokens=False).ids == [layout.image_id(3)]


def test_mismatches_are_all_reported(tmp_path):
  layout = tiny_tokenizer.layout()
  swapped = tiny_tokenizer.build(layout, swap=("<|begin_of_audio|>", "<|end_of_audio|>"))
  directory = _save(swapped, tmp_path / "tok")
  with pytest.raises(ValueError) as excinfo:
    verify_tokenizer(layout, directory)
  text = str(excinfo.value)
  boa, eoa = layout.special_id("<|begin_of_audio|>"), layout.special_id("<|end_of_audio|>")
  for name in ("tokenizer.json", "tokenizer_config.json"):
    assert f"{name}: 2 mismatch(es)" in text
  assert f"id {boa}: expected '<|begin_of_audio|>', found '<|end_of_audio|>'" in text
  assert f"id {eoa}: expected '<|end_of_audio|>', found '<|begin_of_audio|>'" in text


def test_layout_of_another_size_is_rejected(tmp_path):
  layout = tiny_tokenizer.layout()
  directory = _save(tiny_tokenizer.build(layout), tmp_path / "tok")
  bigger = VocabLayout(text_size=400, num_specials=21, num_audio_codes=96, num_image_codes=32, size=560)
  with pytest.raises(ValueError) as excinfo:
    verify_tokenizer(bigger, directory / "tokenizer.json", max_listed=3)
  text = str(excinfo.value)
  assert "517 tokens, but the layout uses 549 ids" in text
  assert "... and" in text and "more" in text  # long lists are cut after max_listed
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    load_tokenizer(tmp_path)
