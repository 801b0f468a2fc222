"""maps.npz written entry by entry, for `cxr explain --save-maps`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cxr.explain.methods import Explanation


class MapsWriter:
    """An .npz written entry by entry (as numpy.savez lays it out), so memory does not grow with the
    fold."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED)

    def add(self, entries: list[tuple[str, int]], result: Explanation) -> None:
        """(key, index in the result) pairs: the key is the image, or image/class when several
        classes are explained per image."""
        for key, i in entries:
            for kind, array in (("raw", result.raw_maps[i]), ("upsampled", result.maps[i])):
                with self.zip.open(f"{key}/{kind}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asarray(array, dtype=np.float32))

    def close(self) -> None:
        self.zip.close()
        self.tmp.replace(self.path)
