"""The documentation: the configuration page is the schema's, the site builds in strict mode (a
broken link fails it), and the README stays a landing page."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def generated_reference() -> str:
    spec = importlib.util.spec_from_file_location(
        "config_reference", REPO / "scripts" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference()


def test_the_configuration_page_is_generated_from_the_schema() -> None:
    page = (REPO / "docs" / "configuration-keys.md").read_text()
    assert page == generated_reference(), (
        "docs/configuration-keys.md differs from the schema: run "
        "`.venv/bin/python scripts/config_reference.py > docs/configuration-keys.md`"
    )
    from cxr.config import Config

    for section, field in Config.model_fields.items():  # every key has a row
        for key in field.annotation.model_fields:
            assert re.search(rf"^\| `{key}` \|", page.split(f"## `{section}`")[1], re.M), key


def mkdocs(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(folder / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    built = mkdocs(REPO, tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "review" / "index.html").is_file()
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "audit.md").open("a") as page:
        page.write("\nSee [the missing page](missing.md).\n")
    broken = mkdocs(copy, tmp_path / "again")
    assert broken.returncode != 0 and "missing.md" in broken.stderr


def test_the_readme_is_a_landing_page() -> None:
    text = (REPO / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    assert len(prose.split()) <= 1600
    headings = re.findall(r"^#+ (.+)$", prose, re.M)
    assert len(headings) == len(set(headings)), "a heading twice"
    assert max(map(len, text.splitlines())) < 300
    # every page and picture it links exists
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", text):
        assert (REPO / target).is_file(), target
    for word in ("bash scripts/demo.sh", "bash scripts/test.sh", "apt-get install chromium"):
        assert word in text
