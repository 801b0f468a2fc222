"""Print a training history side by side: does validation track training?"""

from __future__ import annotations

import sys

import pandas as pd


def main(path: str) -> None:
    history = pd.read_csv(path)
    columns = [
        c
        for c in ("epoch", "loss", "auc", "val_loss", "val_auc", "accuracy", "val_accuracy")
        if c in history.columns
    ]
    print(history[columns].assign(epoch=history["epoch"] + 1).round(4).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1])
