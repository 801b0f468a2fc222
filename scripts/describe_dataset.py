"""Print a dataset's size, classes, folds and boxes: what the demo made, at a glance."""

from __future__ import annotations

import sys
from pathlib import Path

from cxr.data.labels import decode_boxes, read_labels


def main(folder: str) -> None:
    table = read_labels(Path(folder))
    boxes = sum(len(decode_boxes(b)) for b in table.get("boxes", []))
    print(
        f"{folder}: {len(table)} images, {table['patient_id'].nunique()} patients, "
        f"{table['fold'].nunique()} folds, {boxes} boxes"
    )
    print(table.groupby(["fold", "label"]).size().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
