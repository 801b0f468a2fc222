"""Resuming an explanation: the rows an earlier run (any shard) already wrote with the same
settings, whose overlays still exist, are kept instead of recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.data.labels import from_spreadsheet_safe


def read_previous_rows(folder: Path, settings: dict) -> pd.DataFrame:
    """Rows of earlier runs (any shard) with the same settings whose overlay still exists."""
    text_columns = {"image": str, "patient_id": str, "outcome": str}
    frames = [pd.read_csv(path, dtype=text_columns) for path in sorted(folder.glob("report*.csv"))]
    if not frames:
        return pd.DataFrame()
    rows = from_spreadsheet_safe(
        pd.concat(frames, ignore_index=True).drop_duplicates("image", keep="last")
    )
    rows[["patient_id", "outcome"]] = rows[["patient_id", "outcome"]].fillna("")
    if not set(settings) <= set(rows.columns):
        return pd.DataFrame()
    same = np.logical_and.reduce(
        [rows[key].astype(str) == str(value) for key, value in settings.items()]
    )
    exists = rows["overlay"].map(lambda p: (folder / p).is_file())
    return rows[same & exists].reset_index(drop=True)
