"""Every CSV cxr writes goes through `write_csv`, and every one it reads back through `read_csv`.

The tables hold a user's own text (class names, patient ids, file names, a CSV's other columns),
and people open them in Excel or LibreOffice, which run a cell that begins with `=`, `+`, `-` or
`@` as a formula (CSV injection). `write_csv` prefixes such text with a quote, numbers stay as
they are, and the file is written whole or not at all (a temporary name, then a rename);
`read_csv` takes the quote off again, so a value survives any number of rounds unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr.atomic import atomic_path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _needs_quote(value: object) -> bool:
    """Text a spreadsheet would run (a quote already in front counts too, so that it survives
    the round trip)."""
    return (
        isinstance(value, str)
        and value.lstrip("'").startswith(FORMULA_STARTS)
        and not _is_number(value)
    )


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell a spreadsheet would run as a formula quoted."""

    def escape(value: object) -> object:
        return "'" + value if _needs_quote(value) else value  # type: ignore[operator]

    text = table.select_dtypes(include=["object", "string"]).columns
    safe = table.assign(**{str(c): table[c].map(escape) for c in text}) if len(text) else table
    safe = safe.rename(columns=escape)  # a user's column names are cells too
    if safe.index.dtype == object:
        safe = safe.rename(index=escape)
    return safe


def from_spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Undo `spreadsheet_safe`."""

    def unescape(value: object) -> object:
        quoted = isinstance(value, str) and value.startswith("'") and _needs_quote(value[1:])
        return value[1:] if quoted else value  # type: ignore[index]

    text = table.select_dtypes(include=["object", "string"]).columns
    plain = table.assign(**{str(c): table[c].map(unescape) for c in text}) if len(text) else table
    return plain.rename(columns=unescape)


def write_csv(table: pd.DataFrame, path: Path, index: bool = False) -> None:
    """Write `table` to `path` spreadsheet-safe and atomically."""
    with atomic_path(path) as tmp:
        spreadsheet_safe(table).to_csv(tmp, index=index)


def read_csv(path: Path, **options) -> pd.DataFrame:
    """Read a CSV cxr wrote (pandas' options), its quoted text unquoted."""
    return from_spreadsheet_safe(pd.read_csv(path, **options))
