"""Image reading: DICOM photometry and windowing, bit depths, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_dicom
from PIL import Image

from cxr.data.images import read_image, resize_image, write_png
from cxr.errors import DataError

RAMP = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (10, 1))  # 10 x 100, 0..3960


def test_dicom_monochrome2_is_min_max_scaled(tmp_path: Path) -> None:
    image = read_image(make_dicom(tmp_path / "a.dcm", RAMP))
    assert image.dtype == np.uint8 and image.shape == (10, 100)
    assert image[0, 0] == 0 and image[0, -1] == 255
    assert (np.diff(image[0].astype(int)) >= 0).all()


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    normal = read_image(make_dicom(tmp_path / "a.dcm", RAMP))
    inverted = read_image(make_dicom(tmp_path / "b.dcm", RAMP, photometric="MONOCHROME1"))
    assert (inverted.astype(int) == 255 - normal.astype(int)).all()


def test_dicom_window_is_applied(tmp_path: Path) -> None:
    # window centre 2000, width 400: values <= 1800 are black, >= 2200 white, a ramp between
    image = read_image(make_dicom(tmp_path / "w.dcm", RAMP, window=(2000, 400)))
    values = RAMP[0].astype(float)
    assert (image[0][values <= 1780] == 0).all()
    assert (image[0][values >= 2220] == 255).all()
    middle = image[0][(values > 1850) & (values < 2150)]
    assert middle.min() > 0 and middle.max() < 255


def test_sixteen_bit_png(tmp_path: Path) -> None:
    Image.fromarray(RAMP.astype(np.uint16)).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255


@pytest.mark.parametrize(
    ("name", "content"), [("empty.png", b""), ("junk.png", b"not an image"), ("junk.dcm", b"DICM?")]
)
def test_unreadable_files_raise_data_error(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=name):
        read_image(tmp_path / name)


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8) + 80).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable image"):
        read_image(tmp_path / "t.png")


def test_resize_and_atomic_png(tmp_path: Path) -> None:
    image = resize_image(np.full((100, 80), 200, np.uint8), 32)
    assert image.shape == (32, 32) and (image == 200).all()
    write_png(image, tmp_path / "sub" / "o.png")
    assert (np.asarray(Image.open(tmp_path / "sub" / "o.png")) == image).all()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.png"]
