"""Figures for files: matplotlib with its file-only backend (no display is needed, and none is
opened), saved whole or not at all."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cxr.atomic import atomic_path


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Lay out, write atomically at 100 dpi, and close `fig` (also when the write fails)."""
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
