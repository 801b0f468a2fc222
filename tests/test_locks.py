"""The fold lock of #23 without TensorFlow: a holder in another process, a stale lock, another
host's lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxr.errors import DataError
from cxr.locks import check_free, hold

HOLD = """
import sys, time
from pathlib import Path
from cxr.locks import hold
with hold(Path(sys.argv[1]), "fold 0"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_held_lock_names_its_process_and_a_dead_one_is_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / ".training" / "fold0.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for attempt in (lambda: hold(path, "fold 0").__enter__(), lambda: check_free(path, "f")):
            with pytest.raises(DataError, match=f"being trained by process {holder.pid} on"):
                attempt()
        holder.kill()  # as kill -9: the file stays, its flock goes with the process
        holder.wait()
    finally:
        holder.kill()
    assert json.loads(path.read_text())["pid"] == holder.pid
    check_free(path, "fold 0")  # a stale lock blocks no reader
    with caplog.at_level("WARNING"), hold(path, "fold 0") as me:
        assert json.loads(path.read_text())["pid"] == me.pid
    assert f"stale lock was taken over: process {holder.pid}" in caplog.text
    assert not path.exists() and not path.parent.exists(), "released and tidied on exit"


def test_a_lock_from_another_host_is_not_taken_over(tmp_path: Path) -> None:
    """On a network filesystem a process on another host cannot be checked: refuse, say which
    file to delete."""
    path = tmp_path / "fold0.lock"
    other = {"pid": 1, "host": "other-node", "started": time.ctime(), "command": "cxr train"}
    path.write_text(json.dumps(other))
    for attempt in (lambda: hold(path, "fold 0").__enter__(), lambda: check_free(path, "fold 0")):
        with pytest.raises(
            DataError, match=f"other-node.*if that training has ended, delete {path}"
        ):
            attempt()
    assert json.loads(path.read_text()) == other
