"""Files and folders that appear whole or not at all, with the permissions a plain open() gives.

Every writer in cxr goes through here: a temporary name in the same folder, then a rename, so a
reader (or a crash, or a full disk) never leaves half a file under the final name. Python's tempfile
makes private files (0600) and folders (0700); they are given the user's umask instead, so a lab
group can read what cxr writes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then put it back
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import, before any thread could be writing files
FILE_MODE = 0o666 & ~UMASK
FOLDER_MODE = 0o777 & ~UMASK


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new hidden file in `path`'s folder (made if needed), keeping the final suffix (Keras and
    Pillow choose formats by it): its descriptor and name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}"
    )


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it becomes `path` only if the block succeeds.

    The temporary name keeps the final suffix (Keras and Pillow choose formats by it).
    """
    fd, name = _temporary_beside(path)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        raise_named(exc, path)
        raise


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Temporary file then rename, for bytes made in memory (an encoded overlay): written through
    the descriptor the temporary file was made with, where reopening it by name cost a quarter of
    a small image's write."""
    fd, name = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), FILE_MODE)
        os.replace(name, path)
    except BaseException as exc:
        Path(name).unlink(missing_ok=True)
        raise_named(exc, path)
        raise


def raise_named(exc: BaseException, path: Path) -> None:
    """An OSError that names no file (a write that hit a full disk) is raised again naming the
    file being written, so the one-line error says which; any other exception is left as it is."""
    if isinstance(exc, OSError) and not exc.filename and exc.errno is not None:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Temporary file then rename: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def follow_umask(folder: Path) -> None:
    """Give `folder` and the folders below it the mode a plain mkdir gives (TensorFlow makes its
    log folders 0755 whatever the umask)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, FOLDER_MODE)


def json_ready(value: object) -> object:
    """`value` with every NaN or infinite float as None: JSON has no NaN (Python's json writes a
    bare NaN that other readers refuse), and an undefined metric is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def write_json_atomic(path: Path, data: object) -> None:
    """Standard JSON (undefined numbers as null), indented, whole or not at all."""
    write_text_atomic(path, json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n")


def make_work_folder(parent: Path, name: str) -> Path:
    """A hidden `.NAME.*.partial` folder in `parent` to build in before renaming it into place."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent))
    os.chmod(folder, FOLDER_MODE)
    return folder


def stale_work_folders(parent: Path, name: str) -> list[Path]:
    """Work folders of `name` that an earlier, killed run left behind in `parent`."""
    return (
        sorted(p for p in parent.glob(f".{name}.*.partial") if p.is_dir())
        if parent.is_dir()
        else []
    )
