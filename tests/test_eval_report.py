"""The table helpers of eval.report that results.md / results.csv / the per-sample JSONL use (and the demo's)."""
import json
import math

import numpy as np
import pytest

from omnidiff_jax.eval import report


def test_json_default_turns_numpy_scalars_into_python_values():
  text = json.dumps(dict(a=np.float32(0.5), b=np.int64(3), c=np.bool_(True)), default=report.json_default)
  assert json.loads(text) == dict(a=0.5, b=3, c=True)
  with pytest.raises(TypeError, match="not JSON serialisable: ndarray"):
    json.dumps(np.zeros(2), default=report.json_default)


def test_format_value_and_markdown_table():
  assert [report.format_value(v) for v in (3.14159, math.nan, None, 7, "x")] == ["3.142", "", "", "7", "x"]
  assert report.format_value(3.14159, significant=3) == "3.14"
  assert report.markdown_table(("name", "value"), [("a", 0.123456), ("b", None)]) == (
      "| name | value |\n|---|---|\n| a | 0.1235 |\n| b |  |\n")
