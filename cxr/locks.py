"""One training per fold at a time: a lock file that names its holder.

The trainer holds an exclusive `flock` on `runs/<experiment>/.training/fold<K>.lock` for as long as
it trains, and writes its process id, host, start time and command into it. The kernel releases a
flock when its process dies, however it dies, so a lock file whose flock is free is stale: its
holder is gone (a `kill -9`, a power cut), and the next training takes it over with a warning.

A holder on another host cannot be checked from here: on a network filesystem whose locks are not
shared between machines (some NFS set-ups), a lock file written by another host is refused as held,
with the path to delete once that training has ended.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cxr.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def me(cls) -> Holder:
        return cls(
            os.getpid(),
            socket.gethostname(),
            time.strftime("%Y-%m-%d %H:%M:%S"),
            shlex.join(["cxr", *sys.argv[1:]])[:300],
        )

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (`{self.command}`, since {self.started})"

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()


def _read_holder(fd: int) -> Holder | None:
    """The holder written in an open lock file (None when it is empty or cut)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        found = json.loads(os.read(fd, 4096).decode("utf-8"))
        return Holder(
            int(found["pid"]), str(found["host"]), str(found["started"]), str(found["command"])
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _flock(fd: int, kind: int) -> bool:
    """Take a flock without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _busy(what: str, holder: Holder | None, path: Path) -> DataError:
    who = holder.describe() if holder is not None else "another process"
    return DataError(
        f"{what} is being trained by {who}; wait for it to finish or stop it (lock: {path})"
    )


def _elsewhere(what: str, holder: Holder, path: Path) -> DataError:
    return DataError(
        f"{what} is locked by {holder.describe()}, which cannot be checked from "
        f"{socket.gethostname()}; if that training has ended, delete {path}"
    )


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[Holder]:
    """Hold the lock at `path` for the block, or raise a DataError naming its holder.

    `what` names the locked thing in messages ("fold 0 of experiment 'x'"). A stale lock (its
    process is gone) is taken over with a warning. The file is removed on leaving the block.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed by a holder leaving: make it again
            continue
        if not _flock(fd, fcntl.LOCK_EX):
            holder = _read_holder(fd)
            os.close(fd)
            raise _busy(what, holder, path)
        if _same_file(fd, path):  # not removed by a holder leaving while we opened it
            break
        os.close(fd)
    try:
        previous = _read_holder(fd)
        if previous is not None and not previous.here:
            raise _elsewhere(what, previous, path)
        if previous is not None:
            log.warning(
                "%s: a stale lock was taken over: %s is no longer running (killed?)",
                what,
                previous.describe(),
            )
        me = Holder.me()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(vars(me)) + "\n").encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield me
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it: the next holder opens a new file
        os.close(fd)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # when no other lock or file is in it


def check_free(path: Path, what: str) -> None:
    """Raise a DataError naming the holder when a process holds the lock at `path`; a stale lock
    (or none) passes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # no lock (or no such folder: said later)
        return
    try:
        holder = _read_holder(fd)
        if not _flock(fd, fcntl.LOCK_SH):
            raise _busy(what, holder, path)
        if holder is not None and not holder.here:
            raise _elsewhere(what, holder, path)
    finally:
        os.close(fd)
