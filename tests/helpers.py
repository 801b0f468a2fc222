"""Test helpers: write small DICOM files and serve files over HTTP on 127.0.0.1 only."""

from __future__ import annotations

import base64
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
) -> Path:
    """A minimal valid 16-bit greyscale DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Behaviour:
    """How the test server misbehaves: cut the first N responses after some bytes, answer 503 first
    K times, require auth."""

    cut_after: int | None = None
    cuts_left: int = 0
    fail_503: int = 0
    auth: tuple[str, str] | None = None
    ignore_range: bool = False
    requests: list[dict] = field(default_factory=list)


@contextmanager
def serve(files: dict[str, bytes], behaviour: Behaviour | None = None) -> Iterator[str]:
    """Serve `files` by name at http://127.0.0.1:PORT/NAME with Range support; yields the base
    URL."""
    state = behaviour or Behaviour()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append(
                {
                    "path": self.path,
                    "range": self.headers.get("Range"),
                    "auth": self.headers.get("Authorization"),
                }
            )
            if state.auth is not None:
                expected = (
                    "Basic "
                    + base64.b64encode(f"{state.auth[0]}:{state.auth[1]}".encode()).decode()
                )
                if self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return
            if state.fail_503 > 0:
                state.fail_503 -= 1
                self.send_error(503)
                return
            body = files.get(urllib.parse.urlsplit(self.path).path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            start = 0
            header = self.headers.get("Range")
            if header and not state.ignore_range:
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cuts_left > 0 and state.cut_after is not None:
                state.cuts_left -= 1
                self.wfile.write(payload[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
