"""The package's imports point down only and form no circle (ast over omnidiff_jax/**/*.py, function-level
imports included; `if TYPE_CHECKING:` imports are annotations only and left out)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "omnidiff_jax"
# layer -> layers it must not import
FORBIDDEN = {
    "models": {"checkpoints", "data", "sampling", "training", "eval", "demo"},
    "data": {"training", "sampling", "eval", "demo"},
    "checkpoints": {"data", "sampling", "training", "eval", "demo"},
    "sampling": {"training", "eval", "demo"},
    "training": {"sampling", "eval", "demo"},
    "eval": {"demo"},   # the demo (omnidiff_jax/demo: built-in corpus, media networks) sits on top
}


def _modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> file; a package's __init__.py is the package's name."""
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = ("omnidiff_jax",) + path.relative_to(PACKAGE).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def _is_type_checking(node: ast.If) -> bool:
  return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
  """The package modules `name` imports (from x import y counts as x.y when that is a module)."""
  tree = ast.parse(path.read_text(), str(path))
  skipped = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for b in block.body for n in ast.walk(b)}
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
      found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
  return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FORBIDDEN) else None


def test_no_upward_imports():
  upward = sorted(f"{src} -> {dst}" for src, dsts in _graph().items() for dst in dsts
                  if _layer(dst) in FORBIDDEN.get(_layer(src), ()))
  assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  return out


def test_no_import_circles():
  cycles = _cycles(_graph())
  assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_walk_sees_imports():
  """The checks above are only as good as the walk: it finds known edges, lazy and relative ones included."""
  graph = _graph()
  assert "omnidiff_jax.tasks" in graph["omnidiff_jax.chat"]
  assert "omnidiff_jax.models.dream.modeling" in graph["omnidiff_jax.checkpoints.orbax_io"]
  assert "omnidiff_jax.data.media" in graph["omnidiff_jax.sampling.inputs"]  # inside a function
  assert (_layer("omnidiff_jax.models.dream.modeling"), _layer("omnidiff_jax.data"), _layer("omnidiff_jax.tasks")) == (
      "models", "data", None)
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
