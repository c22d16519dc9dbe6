"""Every tool follows one CLI convention: absl flags (config_flags for configs), snake_case flag names, no
sys.path edits, and `--help` that shows a command line."""
import ast
import pathlib

import pytest

from tool_cli import ROOT, run_tool

TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


def _calls(tree, prefix):
  return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).startswith(prefix)]


@pytest.mark.parametrize("name", TOOLS)
def test_tool_source_follows_the_convention(name):
  source = (ROOT / "tools" / f"{name}.py").read_text()
  tree = ast.parse(source)
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  assert "argparse" not in imported and "absl" in imported, name
  assert "sys.path" not in source, name
  flag_names = [c.args[0].value for c in _calls(tree, "flags.DEFINE_") + _calls(tree, "config_flags.DEFINE_")]
  assert flag_names and all(n.replace("_", "").isalnum() and n.islower() for n in flag_names), flag_names
  assert "app.run(main)" in source


def test_one_spelling_per_flag():
  """A flag name means one thing across tools: the shared ones are defined alike (same kind)."""
  kinds = {}
  for name in TOOLS:
    tree = ast.parse((ROOT / "tools" / f"{name}.py").read_text())
    for call in _calls(tree, "flags.DEFINE_") + _calls(tree, "config_flags.DEFINE_"):
      kinds.setdefault(call.args[0].value, set()).add(ast.unparse(call.func).rpartition(".")[2])
  assert {flag: kind for flag, kind in kinds.items() if len(kind) > 1} == {}
  assert "cpu_devices" in kinds and "on_error" in kinds


def test_help_shows_an_example():
  for name in TOOLS:
    run = run_tool(name, "--help", timeout=120)  # absl prints the docstring and the flags, then exits 1
    assert f"python tools/{name}.py" in run.stdout and "flags:" in run.stdout, (name, run.stdout[:500], run.stderr)


def test_configs_are_a_package():
  setup = (ROOT / "setup.cfg").read_text()
  assert "configs" in setup.split("[options.packages.find]")[1].split("[")[0]
  assert (pathlib.Path(ROOT) / "configs" / "__init__.py").is_file()
