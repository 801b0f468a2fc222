"""The `cxr` command line: parse, call one library function, turn our errors into one red line.

Exit codes: 0 success, 1 data/runtime error, 2 configuration or usage error.
Any exception that is not a CxrError is a bug and keeps its traceback.

commands.py holds the Typer app and its commands, present.py what they print, failures.py how
an error becomes one line.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up lines (CUDA probing, oneDNN, CPU features) are noise to a CLI user;
# set TF_CPP_MIN_LOG_LEVEL yourself (0) to see them. Set before any command imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cxr.cli.commands import app

__all__ = ["app"]
