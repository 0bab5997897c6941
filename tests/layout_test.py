"""The package layout's import rule (docs/design.md "Layout"), read from the sources with ast.

Each sub-package sits on a layer and imports only from lower layers (and itself); the
command modules at the package's top level import anything; nothing in a sub-package imports
a command module. ``training`` and ``inference`` are siblings: neither imports the other.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "chromagan_jax")

# Sub-package -> layer. A module may import chromagan_jax.X only when X's layer is lower than
# its own, or X is its own sub-package. ``errors`` (one module) is the leaf all may
# import; ``extras`` (one module, over ``errors``) is what layers 2 and up import optional
# dependencies through.
LAYERS = {
  "errors": 0,
  "configs": 0,
  "extras": 1,
  "ops": 1,
  "runtime": 2,
  "model": 2,
  "data": 2,
  "weights": 3,
  "inference": 4,
  "training": 4,
  "evaluation": 5,
}
COMMANDS = ("train", "colorize", "evaluate", "convert", "export", "app", "demo")


def _part(module: str) -> str | None:
  """The sub-package (or command/leaf module) of a dotted ``chromagan_jax.*`` name."""
  parts = module.split(".")
  return parts[1] if parts[0] == "chromagan_jax" and len(parts) > 1 else None


def imports_of(path: str) -> list[tuple[int, str]]:
  """(line, chromagan_jax.X...) of every import in ``path``, top-level or inside functions."""
  tree = ast.parse(open(path).read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == "chromagan_jax":
        found += [(node.lineno, f"chromagan_jax.{a.name}") for a in node.names]
      else:
        found.append((node.lineno, node.module))
  return [(line, m) for line, m in found if m.startswith("chromagan_jax.")]


def violations(root: str = ROOT) -> list[str]:
  """Every import that breaks the rule, as ``file:line: a -> b`` lines."""
  bad = []
  for dirpath, _, files in os.walk(root):
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      here = rel.split(os.sep)[0].removesuffix(".py")
      if here in COMMANDS or here == "__init__":
        continue  # Commands import anything.
      for line, module in imports_of(path):
        there = _part(module)
        if there == here:
          continue
        ok = there in LAYERS and LAYERS[there] < LAYERS[here]
        if not ok:
          bad.append(f"{rel}:{line}: {here} -> {there}")
  return bad


def test_every_sub_package_is_on_a_layer():
  parts = {
    e.removesuffix(".py")
    for e in os.listdir(ROOT)
    if not e.startswith(("_", ".")) and (e.endswith(".py") or os.path.isdir(os.path.join(ROOT, e)))
  }
  assert parts - set(COMMANDS) - {"__pycache__"} == set(LAYERS)


def test_imports_go_one_way():
  assert violations() == []


def test_a_wrong_way_import_is_caught(tmp_path):
  """The checker itself fails on a lower layer importing a higher one, and on training
  importing inference (siblings)."""
  for pkg, text in [
    ("model", "from chromagan_jax.training import trainer\n"),
    ("training", "def f():\n  from chromagan_jax.inference import engine\n"),
    ("ops", "import chromagan_jax.colorize\n"),
  ]:
    os.makedirs(tmp_path / pkg, exist_ok=True)
    (tmp_path / pkg / "bad.py").write_text(text)
  bad = violations(str(tmp_path))
  assert len(bad) == 3, bad


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_main_and_a_console_script(command):
  pyproject = open(os.path.join(os.path.dirname(ROOT), "pyproject.toml")).read()
  assert f'chromagan-{command} = "chromagan_jax.runtime.runner:{command}"' in pyproject
  tree = ast.parse(open(os.path.join(ROOT, f"{command}.py")).read())
  assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
