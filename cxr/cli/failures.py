"""Our errors as one red line and an exit code; TensorFlow imported without its start-up noise."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from cxr.errors import CxrError, shorten

F = TypeVar("F", bound=Callable[..., Any])


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with the C++ side's stderr closed: TensorFlow 2.19+
    writes its start-up lines before its own log level applies (tensorflow#100442). A failed
    import still raises, after stderr is back; with TF_CPP_MIN_LOG_LEVEL below 3 nothing is
    hidden."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def friendly_errors(command: F) -> F:
    """Print a CxrError as one red line on stderr and exit with its code, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CxrError as exc:
            typer.secho(f"error: {shorten(str(exc), 2000)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.secho(
                "interrupted: nothing half-written was left under a final name",
                err=True,
                fg=typer.colors.YELLOW,
            )
            raise typer.Exit(130) from None
        # a full disk, a read-only folder, a vanished file: the user's to fix, not a bug
        except OSError as exc:
            typer.secho(f"error: {describe_os_error(exc)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None
        except Exception as exc:
            # TensorFlow's out-of-memory (by name: no TF import here)
            if type(exc).__name__ != "ResourceExhaustedError":
                raise
            typer.secho(
                "error: out of memory on the device: lower train.batch_size (train) or "
                "explain.batch_size (evaluate, explain, audit: every batch of a trained model), "
                "and run again",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(exc: OSError) -> str:
    """One line: which path, what went wrong, what to do."""
    path = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left to write {path}: free space on that disk "
            "(or give another output folder) and run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"not allowed to write or read {path} ({exc.strerror}): "
            "check its permissions, or give another folder"
        )
    return f"cannot read or write {path}: {shorten(exc.strerror or str(exc))}"
