"""Layers import only downward (#24): the package's floors, declared once, checked from the source.

Every `import cxr...` and `from cxr... import` in cxr/ (also the lazy ones inside functions) is an
edge; an edge into a higher floor fails, and so do two folders (or top-level modules) that import
each other. Moving code between floors means changing LAYERS below, on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cxr"

# bottom to top; a module belongs to the floor of its longest matching name
LAYERS: list[tuple[str, ...]] = [
    ("cxr.errors",),
    ("cxr.atomic", "cxr.locks", "cxr.tables", "cxr.stats", "cxr.figures"),
    ("cxr.catalogs",),  # TensorFlow-free: the config and the CLI's help read them
    ("cxr.config",),
    ("cxr.results",),  # typed results: what each command returns, writes and the card reads
    ("cxr.data",),
    ("cxr.runs", "cxr.distribute", "cxr.provenance", "cxr.tracking"),
    ("cxr.models",),
    ("cxr.lungs",),
    ("cxr.external", "cxr.findings", "cxr.card", "cxr.trained"),
    ("cxr.claim",),  # reads the card's helpers
    ("cxr.documents",),
    ("cxr.explain",),
    ("cxr.evaluate", "cxr.compare"),
    ("cxr.audit",),
    ("cxr.train",),
    ("cxr.data_randomisation",),  # trains a copy through cxr.train
    ("cxr.cli",),
]
ROOT_MODULE = "cxr"  # `from cxr import __version__`: the package's own __init__, below everything


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The cxr modules `path` imports (`from cxr import stats` imports cxr.stats)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cxr"}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cxr"
        ):
            if node.module == "cxr":
                found |= {f"cxr.{a.name}" for a in node.names if a.name != "__version__"}
            else:
                found.add(node.module)
    return found


def edges() -> set[tuple[str, str]]:
    return {
        (module_name(path), target)
        for path in PACKAGE.rglob("*.py")
        for target in imports(path)
        if target != ROOT_MODULE
    }


def floor(module: str) -> int:
    if module == ROOT_MODULE:
        return -1
    matches = [
        (len(prefix), i)
        for i, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is on no floor: add it to LAYERS"
    return max(matches)[1]


def unit(module: str) -> str:
    """The folder or top-level module: cxr.explain.run -> cxr.explain."""
    return ".".join(module.split(".")[:2])


def upward(found: set[tuple[str, str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, b in found if floor(b) > floor(a))


def mutual(found: set[tuple[str, str]]) -> list[str]:
    units = {(unit(a), unit(b)) for a, b in found if unit(a) != unit(b)}
    return sorted(f"{a} <-> {b}" for a, b in units if (b, a) in units and a < b)


def test_the_checks_catch_what_they_are_for() -> None:
    """On made-up edges whose answer is known: one upward import, one mutual pair."""
    made_up = {
        ("cxr.explain.rows", "cxr.audit.regions"),  # explain sits below audit
        ("cxr.audit.run", "cxr.explain.methods"),
        ("cxr.data.labels", "cxr.errors"),
    }
    assert upward(made_up) == ["cxr.explain.rows -> cxr.audit.regions"]
    assert mutual(made_up) == ["cxr.audit <-> cxr.explain"]


def test_every_module_has_a_floor() -> None:
    for path in PACKAGE.rglob("*.py"):
        floor(module_name(path))


def test_no_upward_import_and_no_folders_importing_each_other() -> None:
    found = edges()
    assert len(found) > 100  # the parser sees the package's imports
    assert upward(found) == []
    assert mutual(found) == []
