"""Where a trained fold came from: the versions that made it and digests of what it read.

Written by `cxr train` as fold<K>/provenance.json and shown in the model card: cxr's version and
git commit (when it runs from a checkout), Python, TensorFlow, Keras, NumPy, CUDA and cuDNN as
TensorFlow was built with them and the GPUs it saw, and SHA-256 digests of the dataset's
labels.csv and of the resolved config.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from cxr.data.download import file_digest

PACKAGE = Path(__file__).resolve().parent


def version_of(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path = PACKAGE.parent) -> str | None:
    """The checkout's commit, with '+changes' when its tracked files differ from it; None when
    cxr was not installed from a git checkout (or git is missing)."""
    if not (folder / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


def accelerators() -> dict:
    """CUDA and cuDNN as TensorFlow was built with them, and the GPUs it sees (empty lists and
    None on a CPU-only build)."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name", device.name))
    return {
        "cuda": build.get("cuda_version") if build.get("is_cuda_build") else None,
        "cudnn": build.get("cudnn_version") if build.get("is_cuda_build") else None,
        "gpus": gpus,
    }


def provenance(labels: Path, config_text: str) -> dict:
    """Everything above, for a fold trained on `labels` (labels.csv) with `config_text` (the
    resolved config as written to config.yaml)."""
    return {
        "cxr": version_of("cxr"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": version_of("tensorflow") or version_of("tensorflow-cpu"),
        "keras": version_of("keras"),
        "numpy": version_of("numpy"),
        **accelerators(),
        "labels_sha256": file_digest(labels),
        "config_sha256": hashlib.sha256(config_text.encode("utf-8")).hexdigest(),
    }
