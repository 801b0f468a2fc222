"""How `cxr explain` is asked to explain: options checked before TensorFlow is imported."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from cxr.errors import ConfigError

TARGET_HELP = "predicted, true, a class name, topK (the K most probable classes) or all-positive"


@dataclass(frozen=True)
class ExplainOptions:
    method: str = "gradcam"
    layer: str | None = None
    target: str = "predicted"  # TARGET_HELP
    overwrite: bool = False
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N deterministic parts, 1-based
    save_maps: bool = False
    montage_size: int = 8
    fold_agreement: bool = False  # also explain each image with the other folds' models


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); the parts are 1..N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 1/4") from None
    if not 1 <= index <= count:
        raise ConfigError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


def in_shard(image: str, shard: tuple[int, int] | None) -> bool:
    """A stable part of the fold for each image (CRC32 of its path), the same on every machine."""
    return shard is None or zlib.crc32(image.encode()) % shard[1] == shard[0] - 1
