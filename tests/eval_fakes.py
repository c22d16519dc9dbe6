"""Tiny fake benchmark copies for the eval tests."""
import json
import pathlib

import numpy as np
from PIL import Image


def make_mme(root: pathlib.Path, subtasks=("existence", "color"), images=("a.png", "b.png")) -> pathlib.Path:
  """MME in upstream's layout: eval_tool/Your_Results/<subtask>.txt (two questions per image) and
  images/<subtask>/<image>, 8 px random images."""
  results = root / "eval_tool" / "Your_Results"
  results.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for subtask in subtasks:
    lines = []
    for image in images:
      path = root / "images" / subtask / image
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(path)
      lines += [f"{image}\tIs there a red bus?\tYes\n", f"{image}\tIs the dog brown?\tNo\n"]
    (results / f"{subtask}.txt").write_text("".join(lines))
  return root


def tiny_clip(path: pathlib.Path):
  """A random 1-layer transformers CLIP with a character-level tokenizer, saved to `path`."""
  import torch
  from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
  from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
  chars = [chr(c) for c in range(33, 127)]
  vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
  (path / "vocab.json").write_text(json.dumps(vocab))
  (path / "merges.txt").write_text("#version: 0.2\n")
  tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
  eos = vocab["<|endoftext|>"]
  cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=77,
                                    bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos),
                   vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      image_size=32, patch_size=8), projection_dim=16)
  torch.manual_seed(0)
  model = CLIPModel(cfg)
  model.save_pretrained(path)
  image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
  CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
  return model
