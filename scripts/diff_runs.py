"""Compare two run folders (or two dataset folders) file by file: every CSV and JSON output.

    python scripts/diff_runs.py runs/synthetic-pna /tmp/other/runs/synthetic-pna [--tolerance 1e-6]

For a refactoring that must change no figure: text cells must be equal, numbers equal within
--tolerance (absolute; the default 0 asks for identical values). Files only one side has are
listed. Prints one line per difference and a last line with the counts; exits 1 when any file
differs, else 0. Volatile fields (timestamps, durations, absolute paths) are not compared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

VOLATILE = {"created", "seconds", "elapsed", "date", "started"}  # JSON keys that vary run to run


def compare_values(a: object, b: object, where: str, tolerance: float, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'second' if key not in a else 'first'}")
            else:
                compare_values(a[key], b[key], f"{where}.{key}", tolerance, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items against {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            compare_values(x, y, f"{where}[{i}]", tolerance, out)
    elif isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        if not both_nan and not abs(a - b) <= tolerance:
            out.append(f"{where}: {a!r} against {b!r}")
    elif a != b:
        out.append(f"{where}: {str(a)[:80]!r} against {str(b)[:80]!r}")


def read_table(path: Path) -> pd.DataFrame:
    """Every cell as text; an empty file (a table with no rows to write) as an empty table."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:  # written as an empty (or bare newline) file
        return pd.DataFrame()


def compare_csv(a: Path, b: Path, name: str, tolerance: float, out: list[str]) -> None:
    left, right = read_table(a), read_table(b)
    if list(left.columns) != list(right.columns) or len(left) != len(right):
        out.append(f"{name}: columns or rows differ ({left.shape} against {right.shape})")
        return
    for column in left.columns:
        x, y = (
            pd.to_numeric(left[column], errors="coerce"),
            pd.to_numeric(right[column], errors="coerce"),
        )
        numeric = x.notna() & y.notna()
        text_differs = (~numeric) & (left[column] != right[column])
        gap = (x - y).abs()[numeric]
        if text_differs.any():
            row = int(text_differs.idxmax())
            out.append(
                f"{name} column {column} row {row + 2}: {left.at[row, column]!r} against "
                f"{right.at[row, column]!r} ({int(text_differs.sum())} rows)"
            )
        if len(gap) and gap.max() > tolerance:
            out.append(f"{name} column {column}: numbers differ by up to {gap.max():.3g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0)
    args = parser.parse_args()
    files = {
        p.relative_to(root)
        for root in (args.first, args.second)
        for p in root.rglob("*")
        if p.suffix in (".csv", ".json") and "logs" not in p.parts
    }
    differences: list[str] = []
    compared = 0
    for relative in sorted(files):
        a, b = args.first / relative, args.second / relative
        if not (a.is_file() and b.is_file()):
            differences.append(f"{relative}: only in {'first' if a.is_file() else 'second'}")
            continue
        compared += 1
        if relative.suffix == ".csv":
            compare_csv(a, b, str(relative), args.tolerance, differences)
        else:
            compare_values(
                json.loads(a.read_text()),
                json.loads(b.read_text()),
                str(relative),
                args.tolerance,
                differences,
            )
    for line in differences:
        print(line)
    print(
        f"{compared} files compared, {len(differences)} difference(s), tolerance {args.tolerance:g}"
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
