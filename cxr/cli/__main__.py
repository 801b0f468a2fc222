"""`python -m cxr.cli`: the same as the `cxr` command."""

from cxr.cli import app

app()
