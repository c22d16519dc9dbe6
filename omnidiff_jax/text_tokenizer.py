"""A small byte-level BPE trained with `tokenizers` and laid out like the Omni vocabulary (tests, the demo).

Ids: trained BPE (0 .. eos-1), then the Qwen2 text specials at their offsets from the end of the text ids
(<|endoftext|>, <|im_start|>, <|im_end|>, reserved fillers, <|beginoftext|>, <|mask|>), then the 21 multimodal
specials, <|audio_i|> and <|image_i|>, exactly as the upstream tokenizer is built, so that
omnidiff_jax.vocab.verify_tokenizer accepts it for the layout it was built for.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from omnidiff_jax.vocab import OMNI_SPECIAL_TOKENS, VocabLayout

# The 256 byte symbols of the byte-level alphabet come before the merges.
BYTE_ALPHABET = 256


def build(layout: VocabLayout, corpus: Iterable[str], swap: tuple[str, str] | None = None) -> Tokenizer:
  """The tokenizer of `layout`, its BPE (up to layout.eos_id ids) trained on the `corpus` lines; ids the merges
  leave free before <|endoftext|> are filled with <|text_filler_i|>. `swap` exchanges two added tokens (to test
  verification). Raises ValueError when the text ids cannot hold the byte alphabet."""
  if layout.eos_id < BYTE_ALPHABET:
    raise ValueError(f"vocab.text_size={layout.text_size} leaves {layout.eos_id} BPE ids before <|endoftext|>; "
                     f"the byte-level alphabet needs {BYTE_ALPHABET} (text_size >= {BYTE_ALPHABET + 24})")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=layout.eos_id, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(corpus, trainer)
  filler = 0
  while tok.get_vocab_size() < layout.eos_id:
    tok.add_tokens([f"<|text_filler_{filler}|>"])
    filler += 1
  text_specials = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"] +
                   [f"<|reserved_{i}|>" for i in range(layout.bos_id - layout.im_end_id - 1)] +
                   ["<|beginoftext|>", "<|mask|>"])
  added = text_specials + list(OMNI_SPECIAL_TOKENS)
  if swap:
    i, j = added.index(swap[0]), added.index(swap[1])
    added[i], added[j] = added[j], added[i]
  tok.add_special_tokens(added)
  tok.add_tokens([f"<|audio_{i}|>" for i in range(layout.num_audio_codes)])
  tok.add_tokens([f"<|image_{i}|>" for i in range(layout.num_image_codes)])
  return tok
