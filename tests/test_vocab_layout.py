from configs import omni_7b, tiny

from omnidiff_jax.vocab import VocabLayout


def test_omni_7b_ids_match_upstream():
  v = VocabLayout.from_config(omni_7b.get_config().vocab)
  assert (v.eos_id, v.im_start_id, v.im_end_id, v.bos_id, v.mask_id) == (151643, 151644, 151645, 151665, 151666)
  assert v.special_id("<|begin_of_image|>") == 151667
  assert v.special_id("<|image|>") == 151682
  assert v.special_id("<|begin_of_audio|>") == 151684
  assert v.special_id("<|audio|>") == 151687
  assert v.audio_offset == 151688 and v.image_offset == 168072
  assert v.used_size == v.size == 176264


def test_tiny_has_same_structure():
  v = VocabLayout.from_config(tiny.get_config().vocab)
  assert v.mask_id == v.text_size - 1 and v.special_id("<|begin_of_image|>") == v.text_size
  assert v.image_offset + v.num_image_codes == v.used_size <= v.size
