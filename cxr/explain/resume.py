"""Resuming an explanation: the rows an earlier run (any shard) already wrote with the same
settings, whose overlays still exist, are kept instead of recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.runs import EXPLAIN_FILES, shard_files
from cxr.tables import from_spreadsheet_safe


def read_previous_rows(folder: Path, settings: dict) -> pd.DataFrame:
    """Rows of earlier runs (any shard) with the same settings whose overlay still exists."""
    text_columns = {"image": str, "patient_id": str, "outcome": str}
    frames = [
        pd.read_csv(path, dtype=text_columns) for path in shard_files(folder, EXPLAIN_FILES.report)
    ]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    key = [c for c in ("image", "target_class") if c in rows.columns]  # a row per image and class
    rows = from_spreadsheet_safe(rows.drop_duplicates(key, keep="last"))
    for column in ("patient_id", "outcome"):  # all empty reads as float NaN
        rows[column] = rows[column].astype(object).where(rows[column].notna(), "")
    if not set(settings) <= set(rows.columns):
        return pd.DataFrame()
    same = np.logical_and.reduce(
        [rows[key].astype(str) == str(value) for key, value in settings.items()]
    )
    rows = rows[same].reset_index(drop=True)
    # an image explained for several classes is done only if every one of its overlays is there
    lost = rows.loc[~rows["overlay"].map(lambda p: (folder / p).is_file()), "image"]
    return rows[~rows["image"].isin(lost)].reset_index(drop=True)
