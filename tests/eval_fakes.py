"""Tiny fake benchmark copies for the eval tests."""
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
