"""The tests' small byte-level BPE (omnidiff_jax.text_tokenizer) trained on a few task prompts, laid out like the
Omni vocabulary."""
from tokenizers import Tokenizer

from omnidiff_jax import config as cfglib
from omnidiff_jax import text_tokenizer
from omnidiff_jax.vocab import VocabLayout

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
  """The tokenizer of layout `v`, its BPE trained on `corpus`; `swap` exchanges two added tokens."""
  return text_tokenizer.build(v, corpus, swap)
