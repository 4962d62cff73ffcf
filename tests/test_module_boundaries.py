"""Module boundaries: no saelab module reaches for another module's private (underscore) name."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "saelab"


def private_uses(path: Path) -> list[str]:
    """``from saelab.x import _name`` and ``x._name`` where ``x`` names an imported saelab module, in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("saelab")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)  # may be a submodule (from saelab import geometry)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("saelab"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_sees_a_private_import_and_a_private_attribute(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from saelab import geometry\nfrom saelab.lm import _source_stamp\n"
                      "geometry._hidden(1)\nprint(len([]))\n")
    assert private_uses(sample) == ["line 2: from saelab.lm import _source_stamp", "line 3: geometry._hidden"]


def test_no_module_uses_another_modules_private_name():
    offenders = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
                 if (uses := private_uses(path))}
    assert offenders == {}


def test_every_module_has_a_row_in_the_readmes_module_table():
    readme = (PACKAGE.parent / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `saelab.")}
    modules = {f"saelab.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    packages = {f"saelab.{path.parent.name}" for path in PACKAGE.glob("*/__init__.py")}
    assert (modules | packages) - rows == set()
