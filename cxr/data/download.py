"""Fetch files robustly and unpack archives safely.

Downloads stream to `<file>.part`, resume from where a cut connection left
off (HTTP Range), retry transient failures with back-off, verify size and
checksum, and only then take their final name. Archives are extracted into a
temporary folder after every member is checked, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import requests
import urllib3
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cxr.atomic import make_work_folder, stale_work_folders
from cxr.errors import ConfigError, DataError

log = logging.getLogger(__name__)
CHUNK = 1 << 20
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RemoteFile:
    """A file a source needs; size and checksum are declared where the publisher states them."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


def fetch(
    remote: RemoteFile,
    folder: Path,
    *,
    auth: tuple[str, str] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    show_progress: bool = True,
) -> Path:
    """Download `remote` into `folder` (resuming a partial file) and return its verified path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.filename
    if target.is_file():
        verify_file(target, remote)
        log.info("already downloaded: %s", target)
        return target
    part = target.with_name(target.name + ".part")
    failures = 0
    if auth is not None and not encrypted_or_local(remote.url):
        raise DataError(
            f"refusing to send credentials for {remote.filename} over plain http "
            f"({_safe_url(remote.url)})"
        )
    with requests.Session() as session:
        session.auth = auth  # requests drops it on a redirect to another host
        while True:
            offset = part.stat().st_size if part.exists() else 0
            try:
                done = _fetch_once(session, remote, part, offset, timeout, show_progress)
            except (
                requests.ConnectionError,
                requests.Timeout,
                urllib3.exceptions.HTTPError,
            ) as exc:
                done, reason = False, f"{type(exc).__name__}"
            except _Retryable as exc:
                done, reason = False, str(exc)
            if done:
                break
            progressed = part.exists() and part.stat().st_size > offset
            failures = 0 if progressed else failures + 1
            if failures > retries:
                raise DataError(
                    f"download of {remote.filename} failed after {retries} retries ({reason}); run "
                    "again to resume"
                )
            wait = backoff * 2 ** max(failures - 1, 0)
            log.warning(
                "download of %s interrupted (%s); resuming in %.1f s", remote.filename, reason, wait
            )
            time.sleep(wait)
    try:
        verify_file(part, remote)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def encrypted_or_local(url: str) -> bool:
    """May credentials travel to `url`? Over https, or to this machine itself (a local test
    server)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or parts.hostname in LOOPBACK


class _Retryable(Exception):
    """A server answer worth another try (5xx, 429, a short body)."""


def _fetch_once(
    session: requests.Session,
    remote: RemoteFile,
    part: Path,
    offset: int,
    timeout: float,
    show_progress: bool,
) -> bool:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(remote.url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and offset and remote.size == offset:
            return True  # the part file is already complete
        if response.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code in (401, 403):
            raise DataError(
                f"download of {remote.filename} refused (HTTP {response.status_code}): "
                "check your credentials and that you accepted the dataset's terms"
            )
        if response.status_code not in (200, 206):
            raise DataError(
                f"download of {remote.filename} failed: HTTP {response.status_code} from "
                f"{_safe_url(remote.url)}"
            )
        resumed = response.status_code == 206
        if offset and not resumed:
            log.info("server ignored the resume request for %s; starting again", remote.filename)
        length = int(response.headers.get("Content-Length", 0)) or None
        total = (offset if resumed else 0) + length if length else remote.size
        with open(part, "ab" if resumed else "wb") as handle, _progress(show_progress) as progress:
            task = progress.add_task(
                remote.filename, total=total, completed=offset if resumed else 0
            )
            # read1 returns what has arrived, so a cut connection loses nothing already received
            while chunk := response.raw.read1(CHUNK, decode_content=True):
                handle.write(chunk)
                progress.advance(task, len(chunk))
        if total is not None and part.stat().st_size < total:
            raise _Retryable("connection closed early")
    return True


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not show,
        transient=True,
    )


def _safe_url(url: str) -> str:
    """The URL without a user name, password or query string (signed URLs carry secrets there):
    printable."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def mirror_url(base: str, filename: str) -> str:
    """`filename` under a mirror's base URL, keeping the base's query string (a signed or token URL)
    after it."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"mirror {_safe_url(base)!r}: expected an http:// or https:// base URL")
    path = f"{parts.path.rstrip('/')}/{urllib.parse.quote(filename)}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def verify_file(path: Path, remote: RemoteFile) -> None:
    """Check size and checksum where declared; raise DataError on a mismatch."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{remote.filename}: size {size} bytes, expected {remote.size}; the file was removed, "
            "run again to download it anew"
        )
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                path.unlink(missing_ok=True)
                raise DataError(
                    f"{remote.filename}: {algorithm} checksum mismatch (expected {expected}, got "
                    f"{actual}); "
                    "the file was removed, run again to download it anew"
                )


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive_name(name: str) -> bool:
    """By name, so that a truncated archive is still recognised (and then refused), never
    skipped."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, target: Path) -> Path:
    """Extract safely into `target` (all or nothing); an existing `target` means it was done
    before."""
    if target.is_dir():
        return target
    # left by a killed earlier extraction
    for stale in stale_work_folders(target.parent, target.name):
        shutil.rmtree(stale, ignore_errors=True)
    work = make_work_folder(target.parent, target.name)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, work)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, work)
        else:
            raise CorruptArchive(f"{archive.name}: not a zip or tar archive, or truncated")
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


class CorruptArchive(DataError):
    """An archive that cannot be read to the end: a cut download, or not an archive at all."""


def check_member_name(name: str, archive: Path) -> None:
    """Reject absolute paths, drive letters and '..' in an archive member."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise DataError(
            f"{archive.name}: unsafe member {name!r} would be written outside the target folder; "
            "refusing to extract"
        )


def _extract_zip(archive: Path, work: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                check_member_name(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(
                        f"{archive.name}: member {info.filename!r} is a symbolic link; refusing to "
                        "extract"
                    )
            for info in zf.infolist():
                zf.extract(info, work)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise CorruptArchive(f"{archive.name}: corrupt or truncated zip archive ({exc})") from None


def _extract_tar(archive: Path, work: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                check_member_name(member.name, archive)
                if member.issym() or member.islnk():
                    link = (
                        PurePosixPath(member.name).parent / member.linkname
                        if member.issym()
                        else PurePosixPath(member.linkname)
                    )
                    if (
                        PurePosixPath(member.linkname).is_absolute()
                        or ".." in PurePosixPath(os.path.normpath(str(link))).parts
                    ):
                        raise DataError(
                            f"{archive.name}: link {member.name!r} -> {member.linkname!r} points "
                            "outside the target folder; "
                            "refusing to extract"
                        )
            tar.extractall(work, filter="data")  # the stdlib's own guard, on top of ours
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, OSError) as exc:
        raise CorruptArchive(f"{archive.name}: corrupt or truncated tar archive ({exc})") from None
    except tarfile.FilterError as exc:
        raise DataError(f"{archive.name}: unsafe member refused ({exc})") from None


def kaggle_credentials() -> tuple[str, str]:
    """Kaggle's standard credentials: KAGGLE_USERNAME/KAGGLE_KEY, else kaggle.json. Never
    printed."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return user, key
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    path = folder / "kaggle.json"
    if not path.is_file():
        raise DataError(
            "Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY, "
            f"or put kaggle.json (from your Kaggle account page) in {folder}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["username"]), str(data["key"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path}: expected a JSON object with 'username' and 'key'") from None
