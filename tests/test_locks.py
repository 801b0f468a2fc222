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


def test_all_folds_names_a_fold_trained_for_the_first_time_now(trained_run, capsys) -> None:
    """#23's leftover: --all-folds used to leave such a fold out without a word."""
    from cxr.cli.commands import selected_folds
    from cxr.runs import folds_in_training, training_lock

    with training_lock(trained_run, 3):
        assert set(folds_in_training(trained_run)) == {3}
        assert selected_folds(trained_run, None, True) == [0, 1]
    said = capsys.readouterr().err
    assert "fold 3 is being trained now and is left out" in said
    assert folds_in_training(trained_run) == {}  # released: a stale lock file is not a training
    assert selected_folds(trained_run, None, True) == [0, 1]
    assert "fold 3" not in capsys.readouterr().err
