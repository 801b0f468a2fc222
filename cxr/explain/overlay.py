"""Heatmaps on radiographs: resize a map to the stored image, colour it, blend, write the file."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cxr.atomic import write_bytes_atomic
from cxr.config import OVERLAY_FORMATS
from cxr.data.labels import Box
from cxr.data.lungfields import CropBox


def resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A [0, 1] map resized (bilinear) to the stored image's size, still in [0, 1]."""
    if heatmap.shape == (height, width):
        return heatmap
    resized = np.asarray(
        Image.fromarray(heatmap.astype(np.float32), mode="F").resize(
            (width, height), Image.Resampling.BILINEAR
        )
    )
    return np.clip(resized, 0.0, 1.0)


def place_map(heatmap: np.ndarray, box: CropBox | None, shape: tuple[int, int]) -> np.ndarray:
    """The model's map on the stored film (`shape`): resized to the film, or, for a model that
    saw the crop `box` of it (data.crop), resized to the box and placed there, 0 where the model
    saw nothing."""
    if box is None:
        return resize_map(heatmap, *shape)
    placed = np.zeros(shape, dtype=np.float32)
    placed[box.region] = resize_map(heatmap, box.height, box.width)
    return placed


@functools.cache
def blend_table(colormap: str, alpha: float) -> np.ndarray:
    """(N * 256, 3) uint8: the colour map's N entries, as matplotlib gives them, blended with each
    of the 256 grey levels. Blending is then one lookup per pixel, 4x faster than the arithmetic,
    and its result is the same to the bit (the same float32 sums, made once)."""
    cmap = matplotlib.colormaps[colormap]
    colours = (cmap(np.arange(cmap.N))[:, :3] * 255.0).astype(np.float32) * np.float32(alpha)
    greys = np.arange(256, dtype=np.float32) * np.float32(1 - alpha)
    return np.rint(colours[:, None, :] + greys[None, :, None]).astype(np.uint8).reshape(-1, 3)


def blend(
    grey: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.4
) -> np.ndarray:
    """(H, W) uint8 image + (H, W) map in [0, 1] -> (H, W, 3) uint8; alpha 0 gives the image, 1 the
    coloured map."""
    if grey.dtype != np.uint8:  # the table has 256 grey levels: other values would pick wrong rows
        raise TypeError(f"blend takes a uint8 grey image, not {grey.dtype}")
    table = blend_table(colormap, alpha)
    entries = len(table) // 256
    # matplotlib's float -> entry rule, then the row of that entry and this grey level
    index = np.clip((heatmap * entries).astype(np.int32), 0, entries - 1)
    index <<= 8
    index += grey
    return np.take(table, index, axis=0)


def draw_overlay(
    grey: np.ndarray,
    heatmap: np.ndarray,
    colormap: str,
    alpha: float,
    empty: bool,
    boxes: list[Box],
    lungs: np.ndarray | None = None,
    seen: CropBox | None = None,
) -> np.ndarray:
    """The overlay's pixels: boxes outlined in white, lung fields (when given) in cyan; an empty map
    is stated, never a silent blank. `seen`: the crop a cropped model saw (data.crop); the film
    outside it is left uncoloured, since the model saw nothing there."""
    # a new (H, W, 3) array either way, drawn on in place
    if empty:
        pixels = np.repeat(grey[..., None], 3, axis=-1)
    else:
        pixels = blend(grey, heatmap, colormap, alpha)
        if seen is not None:
            inside = np.zeros(grey.shape, dtype=bool)
            inside[seen.region] = True
            pixels[~inside] = grey[~inside, None]
    if lungs is not None:
        pixels[lungs & ~ndimage.binary_erosion(lungs)] = (0, 255, 255)
    if not boxes and not empty:  # nothing for Pillow to draw
        return pixels
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for box in boxes:
        draw.rectangle(
            [box.x, box.y, box.x + box.w - 1, box.y + box.h - 1], outline=(255, 255, 255)
        )
    if empty:
        draw.rectangle([0, 0, 96, 14], fill=(0, 0, 0))
        draw.text((3, 2), "EMPTY MAP", fill=(255, 64, 64))
    return np.asarray(image)


def write_overlay(pixels: np.ndarray, path: Path) -> None:
    """Atomic write in the format the path's suffix names (one of OVERLAY_FORMATS)."""
    options = next(kw for suffix, kw in OVERLAY_FORMATS.values() if suffix == path.suffix)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, **options)
    write_bytes_atomic(path, encoded.getbuffer())
