"""Every fixture under tests/fixtures records how it was made: upstream commits and package versions.

npz fixtures hold `meta/<name>` strings; other fixture files and folders hold them in a `<name>.meta.json` sidecar
(tests/fixtures/provenance.py writes both; tests/fixtures/README.md says how to regenerate each fixture).
"""
import json
import pathlib
import re

import numpy as np
import pytest

from fixtures import provenance

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
CODE_SUFFIXES = {".py", ".md"}
CODE_DIRS = {"data", "__pycache__"}   # data/: fakes.py, code that makes inputs in the tests


def _is_fixture(path: pathlib.Path) -> bool:
  if path.is_dir():
    return path.name not in CODE_DIRS
  return path.suffix not in CODE_SUFFIXES and not path.name.endswith(provenance.SIDECAR_SUFFIX)


FIXTURE_FILES = sorted(filter(_is_fixture, FIXTURES.iterdir()))


def _meta(path: pathlib.Path) -> dict[str, str]:
  if path.is_file() and path.suffix == ".npz":
    with np.load(path) as data:
      return {k: str(data[k]) for k in data.files if k.startswith("meta/")}
  sidecar = path.with_name(path.name + provenance.SIDECAR_SUFFIX)
  assert sidecar.exists(), f"{path.name} has no provenance sidecar {sidecar.name}; regenerate it (fixtures/README.md)"
  return json.loads(sidecar.read_text())


def test_fixture_files_are_found():
  """Guards the parametrisation below against an empty glob (both kinds of provenance are exercised)."""
  assert {".npz", ".mvn", ""} <= {p.suffix for p in FIXTURE_FILES}   # "": the TFDS folder


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_records_upstream_commit_and_versions(path):
  meta = _meta(path)
  missing = [k for k in provenance.REQUIRED_KEYS if k not in meta]
  assert not missing, f"{path.name} lacks {missing}; regenerate it with its maker (tests/fixtures/README.md)"
  assert re.search(r"\b[0-9a-f]{7,40}\b", meta["meta/upstream"]), meta["meta/upstream"]   # names a commit
  for key, version in meta.items():
    if key != "meta/upstream":
      assert re.fullmatch(r"\d+(\.\d+)+\S*", version), (path.name, key, version)
