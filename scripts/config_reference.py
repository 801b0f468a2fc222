"""docs/configuration-keys.md, generated from the config schema (cxr.config) and the comments of
configs/default.yaml: every key, its type, default and allowed values, and what it does.

    .venv/bin/python scripts/config_reference.py > docs/configuration-keys.md

tests/test_docs.py fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen

from cxr.config import Config

REPO = Path(__file__).resolve().parents[1]


def comments(path: Path) -> dict[str, str]:
    """`section.key` -> its comment in default.yaml (a continuation line joins the one above)."""
    found: dict[str, str] = {}
    section = last = None
    for line in path.read_text().splitlines():
        if re.match(r"^[a-z_]+:\s*(#.*)?$", line):
            section = line.split(":")[0]
            continue
        match = re.match(r"^  ([a-z_]+):[^#]*(#\s*(.*))?$", line)
        if match and section:
            last = f"{section}.{match.group(1)}"
            found[last] = (match.group(3) or "").strip()
        elif line.strip().startswith("#") and last and line.startswith("    "):
            found[last] = (found[last] + " " + line.strip()[1:].strip()).strip()
    return found


def type_text(annotation: object) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")


def bounds(metadata: list, annotation: object) -> str:
    words = {
        Ge: "≥ {}",
        Gt: "> {}",
        Le: "≤ {}",
        Lt: "< {}",
        MinLen: "at least {} items",
        MaxLen: "at most {} items",
    }
    parts = []
    for item in metadata:
        for kind, form in words.items():
            if isinstance(item, kind):
                value = getattr(item, next(iter(kind.__dataclass_fields__)))
                if kind is MinLen and annotation is str:
                    parts.append("not empty")
                else:
                    parts.append(form.format(f"{value:,}" if isinstance(value, int) else value))
    return ", ".join(parts)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def reference() -> str:
    said = comments(REPO / "configs" / "default.yaml")
    lines = [
        "# Configuration keys",
        "",
        "Generated from the schema (`cxr/config.py`) and the comments of `configs/default.yaml` by",
        "`scripts/config_reference.py`; a test fails when this page and the schema differ.",
        "How configs are read and which settings a trained run fixes:",
        "[Configuration](configuration.md).",
    ]
    for section, field in Config.model_fields.items():
        model = field.annotation
        lines += ["", f"## `{section}`", "", (model.__doc__ or "").strip(), ""]
        lines += ["| key | type | default | allowed | what |", "| --- | --- | --- | --- | --- |"]
        for key, sub in model.model_fields.items():
            default = sub.get_default()
            shown = (
                "null"
                if default is None
                else str(default).lower()
                if isinstance(default, bool)
                else str(default)
            )
            what = said.get(f"{section}.{key}", "")
            lines.append(
                f"| `{key}` | {cell(type_text(sub.annotation))} | `{cell(shown)}` | "
                f"{cell(bounds(sub.metadata, sub.annotation))} | {cell(what)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
