"""Several machines: TF_CONFIG parsing, and two worker processes on 127.0.0.1 training one fold in
step."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_config

from cxr.config import dump_config
from cxr.distribute import Cluster, cluster_from_env
from cxr.errors import ConfigError
from cxr.runs import fold_run


def tf_config(
    workers: list[str], index: int, kind: str = "worker", chief: list[str] | None = None
) -> str:
    cluster = {"worker": workers} | ({"chief": chief} if chief else {})
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def test_cluster_from_tf_config() -> None:
    hosts = ["a:1", "b:2", "c:3"]
    assert cluster_from_env("") is None
    assert cluster_from_env(tf_config(["a:1"], 0)) is None  # one machine: the usual strategies
    assert cluster_from_env(tf_config(hosts, 0)) == Cluster(3, "worker", 0)
    assert (
        cluster_from_env(tf_config(hosts, 0)).is_chief
        and not cluster_from_env(tf_config(hosts, 2)).is_chief
    )
    with_chief = cluster_from_env(tf_config(hosts, 0, chief=["x:0"]))
    assert with_chief.workers == 4 and not with_chief.is_chief  # a named chief outranks worker 0
    assert cluster_from_env(tf_config(hosts, 0, "chief", chief=["x:0"])).is_chief


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "TF_CONFIG is not valid: expected JSON like"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "TF_CONFIG is not valid"),
        (
            tf_config(["a:1", "b:2"], 2),
            "TF_CONFIG task index 2 is not in the cluster's 2 worker task",
        ),
        (
            tf_config(["a:1", "b:2"], 0, "ps"),
            "TF_CONFIG task type 'ps': cxr trains with chief and worker tasks only",
        ),
    ],
)
def test_bad_tf_config(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        cluster_from_env(text)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_localhost_train_one_fold_in_step(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """MultiWorkerMirroredStrategy from TF_CONFIG: both processes train, all-reduce every step, log
    the same losses; only the chief writes the run folder. The validation fold has a short last
    batch (24 images, global batch 16)."""
    cfg = tiny_config(
        synthetic_dataset, tmp_path / "runs", "train.epochs=2", "train.monitor=val_loss"
    )
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cxr.cli", "-v", "train", "--config", str(tmp_path / "c.yaml")],
            env={
                **os.environ,
                "TF_CONFIG": tf_config(hosts, index),
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "TMPDIR": str(tmp_path),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    chief_log, worker_log = (out + err for out, err in outputs)
    assert (
        "training on 2 workers, 2 replicas (MultiWorkerMirroredStrategy); this is worker 0 (chief)"
        in chief_log
    )
    assert "worker 1 is not the chief" in worker_log
    losses = [re.findall(r"(?:val_)?loss: ([0-9.]+)", log) for log in (chief_log, worker_log)]
    # loss and val_loss of both epochs: all-reduced, identical
    assert len(losses[0]) == 4 and losses[0] == losses[1]

    run = fold_run(cfg, 0)
    history = pd.read_csv(run.history)
    assert run.model.is_file() and history["epoch"].tolist() == [0, 1]
    assert [f"{v:.4f}" for v in history[["loss", "val_loss"]].to_numpy().ravel()] == losses[0]
    assert not list(tmp_path.glob("cxr-worker*"))  # the worker's temporary copy is gone
    # and the worker names the chief's model, not its deleted copy
    assert f"-> {run.model}" in worker_log


def test_bad_tf_config_is_one_line_from_the_cli(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cxr.cli import app

    cfg = tiny_config(synthetic_dataset, tmp_path / "runs")
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    monkeypatch.setenv(
        "TF_CONFIG",
        '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}',
    )
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "TF_CONFIG task index 5 is not in the cluster's 2 worker task(s)" in result.output
    assert not fold_run(cfg, 0).folder.exists()  # nothing written
