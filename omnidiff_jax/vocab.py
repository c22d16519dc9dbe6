"""The Omni-Diffusion token-id layout, derived from a config's `vocab` section.

Real model (reference section 2.2): text ids 0..151666 (mask 151666, eos/pad 151643, im_start 151644,
im_end 151645), 21 multimodal specials 151667..151687, 16,384 speech codes <|audio_i|> from 151688 and
8,192 image codes <|image_i|> from 168072; 176,264 in all. A tiny config keeps the same structure: the
fixed text ids sit at the same offsets from the end of its (smaller) text vocabulary.
"""
from __future__ import annotations

import dataclasses

import ml_collections

# The multimodal special tokens in upstream order (ids text_size + 0 .. text_size + 20).
OMNI_SPECIAL_TOKENS = (
    "<|begin_of_image|>", "<|end_of_image|>", "<|context_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>", "<|context_of_video|>",
    "<|begin_of_patch|>", "<|end_of_patch|>", "<|context_of_patch|>",
    "<|begin_of_quad|>", "<|end_of_quad|>", "<|begin_of_ref|>", "<|end_of_ref|>",
    "<|begin_of_box|>", "<|end_of_box|>", "<|image|>", "<|video|>",
    "<|begin_of_audio|>", "<|end_of_audio|>", "<|context_of_audio|>", "<|audio|>",
)


@dataclasses.dataclass(frozen=True)
class VocabLayout:
  text_size: int          # ids [0, text_size) are the Qwen2 BPE vocabulary incl. its special tokens
  num_specials: int       # 21 for Omni, 0 for Dream
  num_audio_codes: int    # 16,384 for Omni
  num_image_codes: int    # 8,192 for Omni
  size: int               # embedding rows (>= used ids)

  @classmethod
  def from_config(cls, vocab_cfg: ml_collections.ConfigDict) -> "VocabLayout":
    return cls(text_size=vocab_cfg.text_size, num_specials=vocab_cfg.num_specials,
               num_audio_codes=vocab_cfg.num_audio_codes, num_image_codes=vocab_cfg.num_image_codes,
               size=vocab_cfg.size)

  # Fixed text-vocabulary ids (offsets from the end of the text ids, as in Qwen2/Dream).
  @property
  def eos_id(self) -> int:  # <|endoftext|>, also pad: 151643
    return self.text_size - 24

  pad_id = eos_id

  @property
  def im_start_id(self) -> int:  # 151644
    return self.text_size - 23

  @property
  def im_end_id(self) -> int:  # 151645
    return self.text_size - 22

  @property
  def bos_id(self) -> int:  # <|beginoftext|>: 151665
    return self.text_size - 2

  @property
  def mask_id(self) -> int:  # <|mask|>: 151666
    return self.text_size - 1

  def special_id(self, token: str) -> int:
    """Id of one of OMNI_SPECIAL_TOKENS, e.g. special_id('<|begin_of_audio|>') == 151684."""
    if not self.num_specials:
      raise ValueError("this vocabulary layout has no multimodal special tokens (Dream layout)")
    return self.text_size + OMNI_SPECIAL_TOKENS.index(token)

  @property
  def audio_offset(self) -> int:  # <|audio_0|>: 151688
    return self.text_size + self.num_specials

  @property
  def image_offset(self) -> int:  # <|image_0|>: 168072
    return self.audio_offset + self.num_audio_codes

  @property
  def used_size(self) -> int:
    return self.image_offset + self.num_image_codes

  def audio_id(self, code):
    return self.audio_offset + code

  def image_id(self, code):
    return self.image_offset + code
