#!/usr/bin/env bash
# Install everything into .venv, then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/get_browser.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
.venv/bin/ruff check cxr tests scripts
.venv/bin/python -m pytest
