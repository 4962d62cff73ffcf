"""Module boundaries: no saelab module reaches for another module's private (underscore) name, nor for a
private attribute of another object (TransformerLens's bridge included: its privates change between releases)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "saelab"


# NamedTuple's public API is spelled with a leading underscore so that it cannot clash with a field name.
NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make", "_field_defaults"}


def private_uses(path: Path) -> list[str]:
    """In one file: ``from saelab.x import _name``, and ``obj._name`` on anything but ``self`` / ``cls``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("saelab")):
            found += [f"line {node.lineno}: from {node.module} import {alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and node.attr not in NAMEDTUPLE_API:
            owner = node.value.id if isinstance(node.value, ast.Name) else ast.unparse(node.value)
            if owner not in ("self", "cls"):  # an object's own privates are its business
                found.append(f"line {node.lineno}: {owner}.{node.attr}")
    return sorted(found, key=lambda use: int(use.split()[1].rstrip(":")))


def test_the_checker_sees_a_private_import_and_a_private_attribute(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from saelab import geometry\nfrom saelab.lm import _source_stamp\n"
                      "geometry._hidden(1)\nprint(len([]))\nmodel.cfg._accepts_derived_position_ids()\n"
                      "self._own = 1\n")
    assert private_uses(sample) == ["line 2: from saelab.lm import _source_stamp", "line 3: geometry._hidden",
                                    "line 5: model.cfg._accepts_derived_position_ids"]


def test_no_module_uses_a_private_name_of_another_module_or_object():
    offenders = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
                 if (uses := private_uses(path))}
    assert offenders == {}


def test_every_module_has_a_row_in_the_readmes_module_table():
    readme = (PACKAGE.parent / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `saelab.")}
    modules = {f"saelab.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    packages = {f"saelab.{path.parent.name}" for path in PACKAGE.glob("*/__init__.py")}
    assert (modules | packages) - rows == set()
