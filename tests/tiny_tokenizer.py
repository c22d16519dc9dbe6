"""A small byte-level BPE trained inside the tests with `tokenizers`, laid out like the Omni vocabulary.

Ids: trained BPE (0 .. eos-1), then the Qwen2 text specials at their offsets from the end of the text ids
(<|endoftext|>, <|im_start|>, <|im_end|>, fillers, <|beginoftext|>, <|mask|>), then the 21 multimodal
specials, <|audio_i|> and <|image_i|>, exactly as the upstream tokenizer is built.
"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from omnidiff_jax import config as cfglib
from omnidiff_jax.vocab import OMNI_SPECIAL_TOKENS, VocabLayout

CORPUS = [
    "Convert the speech to text.", "Convert the text to speech.", "Please response the input audio.",
    "Generate an image based on the provided text description.", "What is shown in the picture?",
    "A red bus drives along a wet street at night, with its lights reflected on the road.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please generate an image based on the input audio.", "system user assistant",
] * 20


def layout() -> VocabLayout:
  """text_size 400 (so that the 256 byte symbols fit before <|endoftext|> at 376), 64 speech, 32 image codes."""
  return VocabLayout.from_config(cfglib.vocab_config(
      text_size=400, num_specials=cfglib.NUM_OMNI_SPECIALS, num_audio_codes=64, num_image_codes=32, size=520))


def build(v: VocabLayout, swap: tuple[str, str] | None = None, corpus: list[str] = CORPUS) -> Tokenizer:
  """The tokenizer of layout `v`, its BPE trained on `corpus`; `swap` exchanges two added tokens (to test
  verification)."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=v.eos_id, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(corpus, trainer)
  filler = 0
  while tok.get_vocab_size() < v.eos_id:
    tok.add_tokens([f"<|text_filler_{filler}|>"])
    filler += 1
  text_specials = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"] +
                   [f"<|reserved_{i}|>" for i in range(v.bos_id - v.im_end_id - 1)] + ["<|beginoftext|>", "<|mask|>"])
  added = text_specials + list(OMNI_SPECIAL_TOKENS)
  if swap:
    i, j = added.index(swap[0]), added.index(swap[1])
    added[i], added[j] = added[j], added[i]
  tok.add_special_tokens(added)
  tok.add_tokens([f"<|audio_{i}|>" for i in range(v.num_audio_codes)])
  tok.add_tokens([f"<|image_{i}|>" for i in range(v.num_image_codes)])
  return tok
