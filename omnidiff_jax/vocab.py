"""The Omni-Diffusion token-id layout, derived from a config's `vocab` section.

Real model (reference section 2.2): text ids 0..151666 (mask 151666, eos/pad 151643, im_start 151644,
im_end 151645), 21 multimodal specials 151667..151687, 16,384 speech codes <|audio_i|> from 151688 and
8,192 image codes <|image_i|> from 168072; 176,264 in all. A tiny config keeps the same structure: the
fixed text ids sit at the same offsets from the end of its (smaller) text vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import ml_collections
import tokenizers

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


# ---------------------------------------------------------------------------------------------------
# Tokenizer files: loading the Qwen2 BPE and verifying a checkpoint's tokenizer against the layout.

# Fixed text-vocabulary tokens and the VocabLayout property holding their id.
FIXED_TEXT_TOKENS = {"eos_id": "<|endoftext|>", "im_start_id": "<|im_start|>", "im_end_id": "<|im_end|>",
                     "bos_id": "<|beginoftext|>", "mask_id": "<|mask|>"}


def expected_tokens(layout: VocabLayout) -> dict[int, str]:
  """{id: token string} of every id the layout fixes (text specials, multimodal specials, codes)."""
  out = {getattr(layout, prop): token for prop, token in FIXED_TEXT_TOKENS.items()}
  if layout.num_specials:
    out.update({layout.special_id(t): t for t in OMNI_SPECIAL_TOKENS})
  out.update({layout.audio_id(i): f"<|audio_{i}|>" for i in range(layout.num_audio_codes)})
  out.update({layout.image_id(i): f"<|image_{i}|>" for i in range(layout.num_image_codes)})
  return out


def load_tokenizer(path) -> tokenizers.Tokenizer:
  """The Qwen2 BPE tokenizer of a tokenizer.json file or of a directory holding one."""
  path = pathlib.Path(path)
  file = path / "tokenizer.json" if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(f"{file}: no tokenizer.json (the Qwen2 BPE ships as tokenizer.json in the checkpoint)")
  return tokenizers.Tokenizer.from_file(str(file))


def verify_tokenizer(layout: VocabLayout, path, max_listed: int = 20) -> None:
  """Checks every id of `layout` against tokenizer files; raises ValueError listing the mismatches.

  path: a tokenizer.json, a tokenizer_config.json (its 'added_tokens_decoder'), or a directory; in a
  directory every one of the two files present is checked. At most `max_listed` mismatches are spelled
  out per file, followed by the total count.
  """
  path = pathlib.Path(path)
  files = ([path / n for n in ("tokenizer.json", "tokenizer_config.json") if (path / n).is_file()]
           if path.is_dir() else [path])
  if not files:
    raise FileNotFoundError(f"{path}: neither tokenizer.json nor tokenizer_config.json found")
  expected = expected_tokens(layout)
  report = []
  for file in files:
    if file.name == "tokenizer_config.json":
      decoder = json.loads(file.read_text()).get("added_tokens_decoder", {})
      actual = {int(i): entry["content"] for i, entry in decoder.items()}
      size = None
    else:
      tok = load_tokenizer(file)
      actual = {i: tok.id_to_token(i) for i in expected}
      size = tok.get_vocab_size(with_added_tokens=True)
    problems = [f"id {i}: expected {want!r}, found {actual.get(i)!r}"
                for i, want in sorted(expected.items()) if actual.get(i) != want]
    if size is not None and size != layout.used_size:
      problems.insert(0, f"{size} tokens, but the layout uses {layout.used_size} ids")
    if problems:
      listed = problems[:max_listed] + ([f"... and {len(problems) - max_listed} more"]
                                        if len(problems) > max_listed else [])
      report.append(f"{file}: {len(problems)} mismatch(es) with the vocab layout:\n    " + "\n    ".join(listed))
  if report:
    raise ValueError("tokenizer does not match the vocab layout:\n  " + "\n  ".join(report))
