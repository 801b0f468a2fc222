"""What every score of a fold's audit reads (cxr.audit.parts): the fold, its model, the one pass
over its images and the sample kept from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from cxr.explain.probe import Probe
from cxr.trained import TrainedFold

if TYPE_CHECKING:  # the pass imports the scores' own helpers (localisation's)
    from cxr.audit.sweep import FoldPass


@dataclass(frozen=True)
class AuditInputs:
    trained: TrainedFold
    model: keras.Model  # as saved: the sanity check randomises copies of it
    fused: keras.Model  # its batch norms fused: the same outputs, sooner
    probe: Probe  # the maps' and the target probability's engine, on the fused model
    seen: FoldPass  # the one pass over the fold: localisation rows, shortcuts, the sample
    images: np.ndarray  # the sample: (N, H, W, C) inputs
    targets: np.ndarray  # each sample image's class explained (its true class)
    maps: dict[str, np.ndarray]  # each method's (N, H, W) maps of the sample
    every: dict[str, np.ndarray]  # the methods' maps, then a random and a centre map per image
    stages: int  # of the sanity check's cascade
    baseline: str  # what deleted pixels become (black, blur, mean)
    folder: Path  # audit/fold<K>/

    @property
    def fold(self) -> int:
        return self.trained.fold

    @property
    def batch(self) -> int:
        """Of every forward pass over perturbed images (explain.batch_size)."""
        return self.trained.batch_size

    @property
    def multi_label(self) -> bool:
        return self.trained.settings.data.multi_label

    @property
    def names(self) -> list[str]:
        return self.seen.sample.names
