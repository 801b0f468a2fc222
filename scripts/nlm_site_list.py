"""A `cxr download folder --csv` list of one hospital's films from the shared NLM lung-mask set
(labels.csv: image, mask, source, patient_id, finding): path, label, patient_id, lung_mask.

    .venv/bin/python scripts/nlm_site_list.py LABELS_CSV OUT_CSV SITE   # shenzhen or montgomery
"""

from __future__ import annotations

import sys

import pandas as pd

COLUMNS = {"image": "path", "finding": "label", "patient_id": "patient_id", "mask": "lung_mask"}


def main(labels: str, out: str, site: str) -> None:
    table = pd.read_csv(labels, dtype=str)
    table = table[table["source"] == site]
    table[list(COLUMNS)].rename(columns=COLUMNS).to_csv(out, index=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
