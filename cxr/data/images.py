"""Read radiographs (PNG, JPEG, DICOM) as 8-bit greyscale arrays and write them as PNG.

Every source converts through these functions, so a dataset on disk is always
8-bit greyscale PNG whatever it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr.atomic import atomic_path
from cxr.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_image_file(path: Path) -> bool:
    """True for the file types `read_image` understands (by suffix)."""
    return path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """Return a (H, W) uint8 array; raise DataError for anything unreadable."""
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            return read_dicom(path)
        return read_raster(path)
    except DataError:
        raise
    except Exception as exc:  # decoders raise many types for corrupt input
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc


def read_raster(path: Path) -> np.ndarray:
    """PNG/JPEG of any bit depth or colour mode to 8-bit greyscale."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                return scale_to_uint8(np.asarray(img, dtype=np.float64))
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from exc


def read_dicom(path: Path) -> np.ndarray:
    """DICOM to 8-bit: modality LUT, VOI LUT/window when present, MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    pixels = ds.pixel_array
    if pixels.ndim != 2:
        raise DataError(
            f"{path}: expected one greyscale frame, got pixel array of shape {pixels.shape}"
        )
    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    image = scale_to_uint8(np.asarray(values, dtype=np.float64))
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        image = 255 - image
    return image


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max rescale to 0..255; a constant image becomes all zeros rather than NaN."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def resize_image(image: np.ndarray, size: int | None) -> np.ndarray:
    """Resize to size x size (area-averaging when shrinking); None keeps the image as it is."""
    if size is None or image.shape == (size, size):
        return image
    return np.asarray(
        Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )


def write_png(image: np.ndarray, path: Path, compress_level: int = 1) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half a PNG."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=compress_level)
