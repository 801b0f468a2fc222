"""#23: a few hundred malformed inputs, generated from a seed, for the two readers of user text
that everything else trusts: the config loader (files and overrides) and the CSV importer.

Every input must end in a clean result or in one of cxr's own errors (which the CLI prints as one
line, exit 1 or 2): never another exception, which would be a traceback. The importer runs
through the CLI itself, so its exit code and single error line are checked as a user sees them.
Nothing here checks what a clean import contains; the bad-input table does that case by case.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxr.cli import app
from cxr.config import load_config
from cxr.errors import CxrError

SEED = 23
NASTY = [
    "",
    " ",
    "~",
    "null",
    "NaN",
    ".nan",
    "-.inf",
    "1e308",
    "2e-4",
    "-1",
    "0",
    "3.5",
    "1_000",
    "0x1F",
    "true",
    "[]",
    "{}",
    "[1, [2, [3]]]",
    "{a: 1}",
    "'unterminated",
    '"x',
    "&a [1]",
    "*a",
    "!!python/object:os.system 'true'",
    "?",
    "- a\n- b",
    "\t",
    "é✓",
    "x" * 500,
    "=cmd|' /C calc'!A0",
    "a: b: c",
    ": :",
    "%YAML 1.1",
    "---",
    "...",
    "@",
    "`",
]
SECTIONS = ["experiment", "data", "model", "train", "explain", "evaluate", "nosuch", ""]
KEYS = [
    "name",
    "seed",
    "output_dir",
    "dataset",
    "root",
    "image_size",
    "classes",
    "fold",
    "cache",
    "widths",
    "weights",
    "epochs",
    "batch_size",
    "learning_rate",
    "monitor",
    "lr_schedule",
    "devices",
    "method",
    "layer",
    "target",
    "alpha",
    "colormap",
    "bootstrap",
    "nosuch",
    "",
    "a.b",
]


def random_override(rng: random.Random) -> str:
    key = ".".join(rng.choice([[rng.choice(SECTIONS), rng.choice(KEYS)], [rng.choice(KEYS)]]))
    value = rng.choice(NASTY)
    return rng.choice([f"{key}={value}", f"{key}{value}", f"={value}", f"{key}=={value}"])


def random_yaml(rng: random.Random) -> str:
    """Mostly a plausible config with nasty values; sometimes plain garbage."""
    if rng.random() < 0.15:
        return "".join(
            rng.choice(["a", ":", "-", " ", "\n", "[", "{", "'", '"', "&", "*", "#"])
            for _ in range(rng.randint(0, 60))
        )
    lines = []
    for _ in range(rng.randint(0, 6)):
        lines.append(f"{rng.choice(SECTIONS) or 'x'}:")
        for _ in range(rng.randint(0, 4)):
            value = rng.choice(NASTY).replace("\n", " ")
            lines.append(f"{rng.choice(['  ', ' ', '    ', chr(9)])}{rng.choice(KEYS)}: {value}")
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n# end"])


def test_the_config_loader_never_raises_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(300):
        path = tmp_path / f"c{case}.yaml"
        path.write_text(random_yaml(rng), encoding="utf-8")
        overrides = [random_override(rng) for _ in range(rng.randint(0, 3))]
        try:
            load_config(path if rng.random() < 0.8 else None, overrides)
            outcomes["loaded"] += 1
        except CxrError as exc:  # the CLI prints it as one line, exit 1 or 2
            assert exc.exit_code in (1, 2) and str(exc).strip(), (path.read_text(), overrides)
            outcomes["refused"] += 1
        except Exception as exc:  # anything else is a traceback for the user
            pytest.fail(f"{type(exc).__name__}: {exc}\n{path.read_text()!r}\n{overrides}")
    assert outcomes["loaded"] > 10 and outcomes["refused"] > 100, outcomes  # both paths exercised


def random_box(rng: random.Random) -> object:
    numbers = [0, 3, -4, 1e308, -1e308, float("nan"), float("inf"), 2.5, 10**30, "7", None, True]
    box = {k: rng.choice(numbers) for k in ("x", "y", "w", "h") if rng.random() < 0.95}
    if rng.random() < 0.3:
        box["label"] = rng.choice(["a", 1, None, [1]])
    if rng.random() < 0.1:
        box["extra"] = 1
    return box


GOOD = {
    "path": None,  # the row's own image
    "label": None,  # normal or sick in turn
    "patient_id": "p1",
    "boxes": '"[{""x"": 2, ""y"": 3, ""w"": 5, ""h"": 4}]"',
    "lungs": "[]",
    "lung_mask": "mask.png",
    "mask": "",
    "site": "a",
}


def random_cell(rng: random.Random, column: str, images: list[str], row: int, bad: float) -> str:
    """A good value for the column, or (with probability `bad`) a nasty one."""
    if rng.random() >= bad:
        if column == "path":
            return images[row % len(images)]
        if column == "label":
            return ("normal", "sick")[row % 2]
        return GOOD.get(column, "x")
    if column in ("boxes", "lungs"):
        kind = rng.random()
        if kind < 0.5:
            return json.dumps([random_box(rng) for _ in range(rng.randint(0, 2))])
        if kind < 0.7:
            return rng.choice(["[", "{}", "[1, 2]", '[{"x": 1}]', "null", "NaN", "[[]]", ""])
        return json.dumps({"x": 1, "y": 1, "w": 2, "h": 2}) if kind < 0.8 else "[]"
    if column == "path":
        return rng.choice(
            [
                *images * 3,
                "",
                "../x.png",
                "/etc/passwd",
                "missing.png",
                "a\\b.png",
                "C:\\x.png",
                "images/../0.png",
                "sub/",
                "\x00.png",
            ]
        )
    if column in ("lung_mask", "mask"):
        return rng.choice(["", "", "mask.png", "grey.png", "missing.png", "../m.png", "0.png"])
    return rng.choice([*NASTY[:20], "normal", "sick", "sick", "normal", "p1", "p2"])


def random_csv(rng: random.Random, images: list[str]) -> str:
    columns = ["path", "label"]
    for extra in ("patient_id", "boxes", "lungs", "lung_mask", "mask", "site", "fold", "image"):
        if rng.random() < (0.3 if extra in GOOD else 0.05):
            columns.append(extra)
    rng.shuffle(columns)
    if rng.random() < 0.1:
        columns.remove(rng.choice(columns))  # a required column missing, sometimes
    bad = rng.choice([0.0, 0.02, 0.1, 0.5, 1.0])  # from clean to all garbage
    rows = [columns] + [
        [random_cell(rng, c, images, r, bad) for c in columns]
        for r in range(rng.choice([0, 1, *range(4, 13)]))
    ]
    quote = rng.random() < 0.1  # an unbalanced quote, sometimes
    text = "\n".join(
        ",".join(('"' if quote and i == 1 else "") + cell for i, cell in enumerate(row))
        for row in rows
    )
    return text if rng.random() > 0.05 else text.encode("utf-8").hex()[:80]


def test_the_csv_importer_never_raises_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    source = tmp_path / "source"
    source.mkdir()
    images = [f"{i}.png" for i in range(6)]
    for i, name in enumerate(images):
        Image.fromarray(np.full((24, 24), 40 * i, np.uint8)).save(source / name)
    lungs = np.zeros((24, 24), np.uint8)
    lungs[4:20, 3:10] = lungs[4:20, 14:21] = 255
    Image.fromarray(lungs).save(source / "mask.png")
    Image.fromarray((np.arange(24 * 24).reshape(24, 24) % 256).astype(np.uint8)).save(
        source / "grey.png"
    )
    outcomes = {"imported": 0, "refused": 0}
    runner = CliRunner()
    for case in range(200):
        csv = source / f"list{case}.csv"
        csv.write_text(random_csv(rng, images), encoding="utf-8")
        args = ["download", "folder", "--csv", str(csv), "--dest", str(tmp_path / "data")]
        result = runner.invoke(app, [*args, "--name", f"d{case}", "--folds", "2", "--quiet"])
        shown = f"{csv.read_text()!r}\n{result.output}"
        assert result.exception is None or isinstance(result.exception, SystemExit), shown
        assert "Traceback" not in result.output, shown
        if result.exit_code:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert result.exit_code in (1, 2) and len(errors) == 1, shown
            outcomes["refused"] += 1
        else:
            outcomes["imported"] += 1
    assert outcomes["imported"] > 5 and outcomes["refused"] > 50, outcomes
