"""The bad-input table: what careless or hostile users tried, and what must hold afterwards.

Issue #10.

Each row: how the input is made, the command, the exit code (2 usage and config, 1 data and
runtime), a fragment of the one-line error, and the folders whose files must be byte-for-byte
unchanged after it (the old run, the other datasets). No row may print a traceback or hang. Cases
that need a server or a fault injected have their own tests below the table.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import serve
from PIL import Image
from typer.testing import CliRunner

from cxr.atomic import FILE_MODE, FOLDER_MODE
from cxr.cli import app
from cxr.data.labels import Box, box_mask, read_labels
from cxr.train import read_history

BASE_CONFIG = """\
experiment: {name: base}
data: {dataset: syn, image_size: 64}
model: {name: tiny_cnn}
train: {epochs: 1, batch_size: 16, early_stopping_patience: null}
"""
DATASET = Path("data/syn")
FOLD0 = Path("runs/base/fold0")
runner = CliRunner()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/syn (60 phantoms, 64 px, 3 folds) and runs/base/fold0 trained for one epoch."""
    root = tmp_path_factory.mktemp("world")
    (root / "base.yaml").write_text(BASE_CONFIG)
    here = Path.cwd()
    os.chdir(root)
    try:
        for args in (
            [
                "download",
                "synthetic",
                "--n",
                "60",
                "--size",
                "64",
                "--folds",
                "3",
                "--name",
                "syn",
                "--quiet",
            ],
            ["train", "--config", "base.yaml"],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def world(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the template, as the working folder."""
    root = tmp_path / "w"
    shutil.copytree(template, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(args: list[str]):
    result = runner.invoke(app, args)
    assert "Traceback" not in result.output, result.output
    return result


def edit_labels(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = DATASET / "labels.csv"
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def first_validation_image() -> str:
    split = pd.read_csv(FOLD0 / "split.csv", dtype=str)
    return split.loc[split["split"] == "validation", "image"].iloc[0]


def train_args(*extra: str) -> list[str]:
    return ["train", "--config", "base.yaml", *extra]


def download_args(*extra: str) -> list[str]:
    return ["download", "synthetic", "--n", "20", "--size", "32", "--folds", "2", "--quiet", *extra]


def not_weights(root: Path) -> list[str]:
    (root / "junk.weights.h5").write_bytes(b"not weights")
    return train_args("--overwrite", "model.weights=junk.weights.h5")


def one_class_folder(root: Path) -> list[str]:
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(
            make_parents(root / "mine" / "normal" / f"{i}.png")
        )
    return ["download", "folder", "--from", "mine", "--folds", "2", "--quiet"]


def make_parents(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def set_box(text: str) -> Callable[[Path], list[str]]:
    def prepare(root: Path) -> list[str]:
        image = first_validation_image()
        edit_labels(lambda t: t.assign(boxes=np.where(t["image"] == image, text, t["boxes"])))
        return ["explain", "--config", "base.yaml"]

    return prepare


def duplicate_row(root: Path) -> list[str]:
    edit_labels(lambda t: pd.concat([t, t.iloc[[3]]]))
    return ["evaluate", "--config", "base.yaml"]


def link_outside_dataset(root: Path) -> list[str]:
    image = DATASET / first_validation_image()
    outside = root / "elsewhere.png"
    shutil.move(image, outside)
    image.symlink_to(outside)
    return train_args("--overwrite")


def oversize_header(root: Path) -> list[str]:
    """A PNG whose header claims 20000 x 20000 pixels (small files can decode to gigabytes)."""
    image = DATASET / first_validation_image()
    head = image.read_bytes()
    image.write_bytes(head[:16] + (20000).to_bytes(4, "big") * 2 + head[24:])
    return train_args("--overwrite")


def damage(relative: str, how: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def prepare(root: Path) -> list[str]:
        how(root / relative)
        return ["evaluate", "--config", "base.yaml"]

    return prepare


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def interrupted_run(*extra: str) -> Callable[[Path], list[str]]:
    """As if training had been killed after its first epoch: a staging folder with a backup."""

    def prepare(root: Path) -> list[str]:
        staging = root / "runs/base/.training/fold0"
        shutil.copytree(root / FOLD0, staging)
        (staging / "backup").mkdir()
        return train_args("--resume", *extra)

    return prepare


def alias_bomb(root: Path) -> list[str]:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, previous in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    (root / "bomb.yaml").write_text("\n".join(lines) + "\n")
    return ["train", "--config", "bomb.yaml"]


def lung_mask_outside(root: Path) -> list[str]:
    """A user's own lung-mask path that climbs out of the dataset folder."""
    edit_labels(lambda t: t.assign(lung_mask="../../../etc/passwd"))
    return ["explain", "--config", "base.yaml"]


def formula_patient(root: Path) -> list[str]:
    split = pd.read_csv(FOLD0 / "split.csv", dtype=str, keep_default_na=False)
    split.loc[split["image"] == first_validation_image(), "patient_id"] = (
        '=HYPERLINK("http://x","y")'
    )
    split.to_csv(FOLD0 / "split.csv", index=False)
    return ["evaluate", "--config", "base.yaml"]


def formula_quoted(root: Path) -> None:
    predictions = pd.read_csv(
        FOLD0 / "evaluation" / "predictions.csv", dtype=str, keep_default_na=False
    )
    assert '\'=HYPERLINK("http://x","y")' in set(predictions["patient_id"])
    assert not predictions["patient_id"].str.startswith("=").any()


def stale_partial(root: Path) -> list[str]:
    (root / "data" / ".syn2.abc123.partial" / "images").mkdir(parents=True)
    return download_args("--name", "syn2")


def no_stale_partial(root: Path) -> None:
    assert (
        not list((root / "data").glob(".syn2.*"))
        and (root / "data" / "syn2" / "labels.csv").is_file()
    )


def nan_labels_csv(root: Path) -> list[str]:
    rows = ["path,label"]
    for i, label in enumerate(["normal", "pneumonia"] * 3 + ["NaN", "null", "", "None"]):
        Image.fromarray(np.full((16, 16), 20 * i, np.uint8)).save(
            make_parents(root / "own" / f"{i}.png")
        )
        rows.append(f"{i}.png,{label}")
    (root / "own" / "list.csv").write_text("\n".join(rows) + "\n")
    return [
        "download",
        "folder",
        "--csv",
        "own/list.csv",
        "--folds",
        "2",
        "--quiet",
        "--name",
        "own",
    ]


def nan_labels_skipped(root: Path) -> None:
    table = read_labels(root / "data" / "own")
    skipped = pd.read_csv(root / "data" / "own" / "skipped.csv")
    assert set(table["label"]) == {"normal", "pneumonia"} and len(table) == 6
    assert len(skipped) == 4 and skipped["reason"].str.startswith("missing label").all()


def link_in_import(root: Path) -> list[str]:
    for cls in ("normal", "sick"):
        for i in range(3):
            Image.fromarray(np.full((16, 16), 50 * i, np.uint8)).save(
                make_parents(root / "imp" / cls / f"{i}.png")
            )
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "secret.png")
    (root / "imp" / "sick" / "link.png").symlink_to(root / "secret.png")
    return ["download", "folder", "--from", "imp", "--folds", "2", "--quiet"]


def link_skipped(root: Path) -> None:
    skipped = pd.read_csv(root / "data" / "imp" / "skipped.csv")
    assert len(skipped) == 1 and "link leading outside" in skipped.loc[0, "reason"]
    assert len(read_labels(root / "data" / "imp")) == 6


def own_csv(root: Path, header: str, cells: list[str], name: str = "own") -> list[str]:
    """`download folder --csv` of 8 small images (4 per class) with extra columns `header`, the
    first row's extra cells `cells[0]`, the others `cells[1]`."""
    rows = [f"path,label,{header}"]
    for i in range(8):
        pixels = np.full((32, 32), 20 * i, np.uint8)
        Image.fromarray(pixels).save(make_parents(root / name / f"{i}.png"))
        rows.append(f"{i}.png,{'sick' if i % 2 else 'normal'},{cells[min(i, 1)]}")
    (root / name / "list.csv").write_text("\n".join(rows) + "\n")
    return ["download", "folder", "--csv", f"{name}/list.csv", "--folds", "2", "--quiet"]


def soft_lung_mask(root: Path) -> list[str]:
    """Anti-aliased masks (grey edges) of two lung fields, and one all-white mask."""
    mask = np.zeros((32, 32), np.uint8)
    mask[6:26, 4:14] = 255
    mask[6:26, 18:28] = 255
    mask[5, 4:14] = mask[5, 18:28] = 128  # a grey edge: not binary
    Image.fromarray(mask).save(make_parents(root / "own" / "soft.png"))
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(root / "own" / "white.png")
    return own_csv(root, "lung_mask", ["white.png", "soft.png"])


def masks_checked(root: Path) -> None:
    table = pd.read_csv(root / "data/own/labels.csv", dtype=str, keep_default_na=False)
    assert table["lung_mask_plausible"].tolist() == ["0"] + ["1"] * 7
    assert table["lung_mask_problem"].iloc[0].startswith("lung area 100%")
    assert (table["lung_mask_problem"].iloc[1:] == "not binary (3 levels)").all()
    stored = np.asarray(Image.open(root / "data/own" / table["lung_mask"].iloc[1]))
    assert set(np.unique(stored)) == {0, 255} and (stored[5] == 255).sum() == 20  # at half max


def patients_missing(root: Path) -> None:
    table = pd.read_csv(root / "data/own/labels.csv", dtype=str, keep_default_na=False)
    assert table["patient_id"].tolist() == [""] * 8  # NaN, None: no patient, not one patient


def class_folder_links(root: Path) -> list[str]:
    for cls in ("normal", "sick"):
        for i in range(3):
            pixels = np.full((16, 16), 50 * i, np.uint8)
            Image.fromarray(pixels).save(make_parents(root / "real" / cls / f"{i}.png"))
        make_parents(root / "imp" / cls).symlink_to(root / "real" / cls)
    return ["download", "folder", "--from", "imp", "--folds", "2", "--quiet"]


def linked_dataset(root: Path) -> list[str]:
    """data/lnk is a link to a dataset elsewhere, replaced twice with --overwrite."""
    shutil.copytree(root / DATASET, root / "elsewhere")
    (root / "data" / "lnk").symlink_to(root / "elsewhere")
    assert run_cli(download_args("--name", "lnk", "--overwrite")).exit_code == 0
    return download_args("--name", "lnk", "--overwrite")


def link_replaced(root: Path) -> None:
    assert not (root / "data" / "lnk").is_symlink() and (root / "data/lnk/labels.csv").is_file()
    assert not list((root / "data").glob(".lnk*")), "no hidden leftover"
    assert len(list((root / "elsewhere" / "images").rglob("*.png"))) == 60, "its target is kept"


def renamed_copy(root: Path) -> None:
    shutil.copytree(root / DATASET, root / "data" / "ext")
    edit = pd.read_csv(root / "data/ext/labels.csv", dtype=str, keep_default_na=False)
    edit.assign(label=edit["label"].replace("pneumonia", "opacity")).to_csv(
        root / "data/ext/labels.csv", index=False
    )


def learning_rate_read(root: Path) -> None:
    assert "learning_rate: 0.0002" in (root / FOLD0 / "config.yaml").read_text()


@dataclass(frozen=True)
class Case:
    prepare: Callable[[Path], list[str]]
    exit_code: int
    message: str
    unchanged: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    ids: list[str] = field(default_factory=list)


CASES: dict[str, Case] = {
    "1 overwrite, missing weights": Case(
        lambda r: train_args("--overwrite", "model.weights=/nonexistent.h5"),
        2,
        "no such file",
        ("runs",),
    ),
    "1 overwrite, imagenet for tiny_cnn": Case(
        lambda r: train_args("--overwrite", "model.weights=imagenet"),
        2,
        "'imagenet' is not available for tiny_cnn",
        ("runs",),
    ),
    "1 overwrite, a file that is not weights": Case(
        not_weights, 2, "cannot load it into tiny_cnn", ("runs",)
    ),
    "1 overwrite, unusable cache": Case(
        lambda r: train_args("--overwrite", "data.cache=base.yaml/cache"),
        1,
        "cannot use it as the cache folder",
        ("runs",),
    ),
    "1 overwrite, absent devices": Case(
        lambda r: train_args("--overwrite", 'train.devices=["/cpu:0","/cpu:7"]'),
        2,
        "'/cpu:7' is not on this machine",
        ("runs",),
    ),
    "2 name .": Case(
        lambda r: download_args("--name", ".", "--overwrite"),
        2,
        "a dataset name is one folder name",
        ("data",),
    ),
    "2 name ..": Case(
        lambda r: download_args("--name", "..", "--overwrite"),
        2,
        "a dataset name is one folder name",
        ("data",),
    ),
    "2 name absolute": Case(
        lambda r: download_args("--name", str(r / "abs")),
        2,
        "a dataset name is one folder name",
        ("data",),
    ),
    "2 name nested": Case(
        lambda r: download_args("--name", "a/b"), 2, "a dataset name is one folder name", ("data",)
    ),
    "3 devices not there": Case(
        lambda r: train_args('train.devices=["/gpu:0","/gpu:1"]'),
        2,
        "'/gpu:0' is not on this machine; it has: /CPU:0",
        ("runs",),
    ),
    "6 one class at download": Case(one_class_folder, 1, "one class only (normal)"),
    "6 one class at train": Case(
        lambda r: (edit_labels(lambda t: t.assign(label="pneumonia")), train_args("--overwrite"))[
            1
        ],
        1,
        "one class only",
        ("runs",),
    ),
    "7 box is a string": Case(
        set_box('[{"x": "a", "y": 1, "w": 5, "h": 5}]'), 1, "column boxes: box ('a', 1, 5, 5)"
    ),
    "7 box is NaN": Case(
        set_box('[{"x": NaN, "y": 1, "w": 5, "h": 5}]'), 1, "is not a finite number"
    ),
    "7 box is Infinity": Case(
        set_box('[{"x": 1, "y": 1, "w": Infinity, "h": 5}]'), 1, "is not a finite number"
    ),
    "7 box is not JSON": Case(set_box("[{x: 1}]"), 1, "bad boxes value"),
    "8 duplicated rows": Case(duplicate_row, 1, "is listed 2 times", ("runs",)),
    "9 missing labels skipped": Case(nan_labels_csv, 0, "wrote", check=nan_labels_skipped),
    "10 link leaving the import folder": Case(link_in_import, 0, "wrote", check=link_skipped),
    "10 link leaving the dataset": Case(
        link_outside_dataset, 1, "links leading outside", ("runs",)
    ),
    "11 oversize image": Case(oversize_header, 1, "(20000x20000)", ("runs",)),
    "12 split.csv deleted": Case(
        damage(f"{FOLD0}/split.csv", Path.unlink), 1, "split.csv is missing"
    ),
    "12 classes.json cut": Case(
        damage(f"{FOLD0}/classes.json", lambda p: p.write_text('["norm')),
        1,
        "classes.json is missing or damaged",
    ),
    "12 model.keras truncated": Case(
        damage(f"{FOLD0}/model.keras", truncate), 1, "unreadable as a Keras model"
    ),
    "12 config.yaml deleted": Case(
        damage(f"{FOLD0}/config.yaml", Path.unlink), 1, "config.yaml is missing"
    ),
    "12 dataset image deleted": Case(
        lambda r: (
            (DATASET / first_validation_image()).unlink(),
            ["evaluate", "--config", "base.yaml"],
        )[1],
        1,
        "listed but missing",
    ),
    "13 pna_cnn widths": Case(
        lambda r: train_args("--overwrite", "model.name=pna_cnn", "model.widths=[16]"),
        2,
        "pna_cnn takes at least 2 widths",
        ("runs",),
    ),
    "13 tiny_cnn widths": Case(
        lambda r: train_args("--overwrite", "model.widths=[4]"),
        2,
        "tiny_cnn takes exactly 2 widths",
        ("runs",),
    ),
    "13 output_dir is a file": Case(
        lambda r: train_args("experiment.output_dir=base.yaml"),
        2,
        "is a file, not a folder",
        ("runs",),
    ),
    "14 resume with another image size": Case(
        interrupted_run("data.image_size=32"), 2, "data.image_size (64 -> 32)", ("runs",)
    ),
    "14 resume with other widths": Case(
        interrupted_run("model.widths=[2,2]"), 2, "model.widths (None -> [2, 2])", ("runs",)
    ),
    "15 overwrite and resume": Case(
        lambda r: train_args("--overwrite", "--resume"), 2, "contradict each other", ("runs",)
    ),
    "15 resume a finished fold": Case(
        lambda r: train_args("--resume"),
        1,
        "it finished training (retrain it with --overwrite)",
        ("runs",),
    ),
    "16 alias bomb": Case(alias_bomb, 2, "once YAML aliases are expanded"),
    "10 lung mask leaving the dataset": Case(
        lung_mask_outside, 1, "column lung_mask: path", ("runs",)
    ),
    "#13 fold agreement without another fold": Case(
        lambda r: ["explain", "--config", "base.yaml", "--fold-agreement"],
        2,
        "has no other trained fold",
        ("runs",),
    ),
    "#14 more RISE masks than fit": Case(
        lambda r: [
            "explain",
            "--config",
            "base.yaml",
            "--method",
            "rise",
            "explain.rise_masks=99999",
        ],
        2,
        "RISE masks (explain.rise_masks 99999)",
    ),
    "#12 explain with another image size": Case(
        lambda r: ["explain", "--config", "base.yaml", "data.image_size=128"],
        2,
        "data.image_size is fixed by the trained run",
        ("runs",),
    ),
    "#12 evaluate with another model": Case(
        lambda r: ["evaluate", "--config", "base.yaml", "model.name=pna_cnn"],
        2,
        "model.name is fixed by the trained run",
        ("runs",),
    ),
    "#12 audit with other classes": Case(
        lambda r: ["audit", "--config", "base.yaml", "data.classes=[a,b]"],
        2,
        "data.classes is fixed by the trained run",
        ("runs",),
    ),
    "18 stale partial folder": Case(stale_partial, 0, "wrote", check=no_stale_partial),
    "18 formula in a user's column": Case(
        formula_patient, 0, "validation ROC AUC", check=formula_quoted
    ),
    "#23 resume with another seed": Case(
        interrupted_run("experiment.seed=7"), 2, "experiment.seed (0 -> 7)", ("runs",)
    ),
    "#23 learning rate in scientific notation": Case(
        lambda r: train_args("--overwrite", "train.learning_rate=2e-4"),
        0,
        "best val_auc",
        check=learning_rate_read,
    ),
    "#23 map to a class the model lacks": Case(
        lambda r: (
            renamed_copy(r),
            ["evaluate", "--config", "base.yaml", "--on", "ext", "--map", "opacity=martian"],
        )[1],
        2,
        "--map opacity=martian: martian is not a class of the model (its classes: normal, "
        "pneumonia)",
        ("runs",),
    ),
    "#23 map with two equals signs": Case(
        lambda r: (
            renamed_copy(r),
            ["evaluate", "--config", "base.yaml", "--on", "ext", "--map", "opacity=pneumonia=x"],
        )[1],
        2,
        "expected THEIR_CLASS=MODEL_CLASS",
        ("runs",),
    ),
    "#23 class folders that are links": Case(
        class_folder_links, 1, "6 skipped, 6 for a link leading outside", ("data",)
    ),
    "#23 overwrite a dataset that is a link": Case(linked_dataset, 0, "wrote", check=link_replaced),
    "#23 empty --method": Case(
        lambda r: ["explain", "--config", "base.yaml", "--method", ""], 2, "--method is empty"
    ),
    "#23 empty --name": Case(
        lambda r: download_args("--name", ""), 2, "--name is empty", ("data",)
    ),
    "#23 --layer with a pixel method": Case(
        lambda r: ["explain", "--config", "base.yaml", "--method", "saliency", "--layer", "x"],
        2,
        "saliency explain(s) the input pixels, not a layer",
        ("runs",),
    ),
    "#23 box of negative size at import": Case(
        lambda r: own_csv(r, "boxes", ['"[{""x"": 5, ""y"": 5, ""w"": -4, ""h"": 4}]"', "[]"]),
        1,
        "list.csv line 2, column boxes: box (5, 5, -4, 4) has no area",
        ("data",),
    ),
    "#23 box of 1e308 at import": Case(
        lambda r: own_csv(r, "boxes", ['"[{""x"": 1, ""y"": 1, ""w"": 1e308, ""h"": 4}]"', "[]"]),
        1,
        "list.csv line 2, column boxes: box (1, 1, 1e+308, 4) has a value beyond 163,840 pixels",
        ("data",),
    ),
    "#23 patient ids that say nothing": Case(
        lambda r: own_csv(r, "patient_id", ["NaN", "None"]), 0, "wrote", check=patients_missing
    ),
    "#23 lung masks that are not binary or not lungs": Case(
        soft_lung_mask, 0, "wrote", check=masks_checked
    ),
    "#23 the retrain hint names the config": Case(
        damage(f"{FOLD0}/split.csv", Path.unlink),
        1,
        "`cxr train --config <your config> --fold 0 --overwrite`",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, world: Path) -> None:
    case = CASES[name]
    args = case.prepare(world)
    before = {folder: fingerprint(world / folder) for folder in case.unchanged}
    result = run_cli(args)
    assert result.exit_code == case.exit_code, result.output
    assert case.message in result.output, result.output
    if case.exit_code:
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and case.message in errors[0] and len(errors[0]) < 600, (
            result.output
        )
    for folder, files in before.items():
        assert fingerprint(world / folder) == files, f"{folder} changed"
    if case.check is not None:
        case.check(world)


def test_full_disk_during_training_keeps_the_old_run(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 5: ENOSPC while saving the checkpoint is one line naming the path; the old run stays."""
    import keras

    def full(self, filepath, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    before = fingerprint(world / "runs")
    monkeypatch.setattr(keras.Model, "save", full)
    result = run_cli(train_args("--overwrite"))
    assert (
        result.exit_code == 1
        and "no space left to write" in result.output
        and "free space" in result.output
    )
    assert fingerprint(world / "runs" / "base" / "fold0") == {
        k.removeprefix("base/fold0/"): v for k, v in before.items() if k.startswith("base/fold0/")
    }
    assert not list((world / "runs").rglob("*.partial.keras"))


def test_identical_images_in_different_folds_are_named(caplog: pytest.LogCaptureFixture) -> None:
    """Case 8: the conversion hashes each image and warns when copies sit in different folds."""
    from cxr.data.dataset import warn_identical_images

    table = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png"],
            "fold": [0, 1, 1, 1],
            "pixels_sha1": ["x", "x", "y", "y"],
        }
    )
    with caplog.at_level("WARNING"):
        warn_identical_images(table)
    assert (
        "1 group(s) of identical images lie in different folds" in caplog.text
        and "a.png = b.png" in caplog.text
    )
    assert "c.png" not in caplog.text  # copies within one fold do not leak


def test_resume_reads_an_empty_or_cut_history(tmp_path: Path) -> None:
    """Case 5: a full disk or a kill can leave history.csv empty or with half a last row."""
    path = tmp_path / "history.csv"
    path.write_text("")
    assert read_history(path).empty
    path.write_text("epoch,loss,val_auc\n0,0.7,0.61\n1,0.6,0.7")
    assert read_history(path)["epoch"].tolist() == [0, 1]
    path.write_text("epoch,loss,val_auc\n0,0.7,0.61\n1,0.6")  # the last row cut mid-way
    assert read_history(path)["epoch"].tolist() == [0]


def test_ctrl_c_says_how_to_resume(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 15: an interrupted train prints the command that continues it."""
    import cxr.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cxr.train, "train_folds", interrupted)
    result = run_cli(train_args("--overwrite"))
    assert result.exit_code == 130 and "--resume" in result.output


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_next(world: Path) -> None:
    """Case 15: a staging folder without a backup is nothing to resume: training starts again."""
    staging = world / "runs" / "base" / ".training" / "fold1"
    staging.mkdir(parents=True)
    (staging / "config.yaml").write_text("half")
    result = run_cli(train_args("--fold", "1"))
    assert result.exit_code == 0, result.output
    assert (world / "runs" / "base" / "fold1" / "model.keras").is_file() and not staging.exists()


def test_kaggle_credentials_never_go_to_a_mirror(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 4: a mirror gets no credentials; its password is never printed; its query is kept."""
    from helpers import Behaviour

    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "s3cret-key")
    state = Behaviour()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    with serve({"rsna-pneumonia-detection-challenge.zip": archive.getvalue()}, state) as base:
        mirror = base.replace("http://", "http://bob:hunter2@") + "/?token=abc"
        result = run_cli(["download", "rsna-pneumonia", "--mirror", mirror, "--quiet"])
    assert result.exit_code == 1 and "stage_*_train_labels.csv" in result.output
    # bob's own, never alice's
    assert state.requests and all(
        r["auth"] in (None, "Basic Ym9iOmh1bnRlcjI=") for r in state.requests
    )
    assert state.requests[0]["path"] == "/rsna-pneumonia-detection-challenge.zip?token=abc"
    assert "hunter2" not in result.output and "s3cret" not in result.output


def test_credentials_are_never_sent_over_plain_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any connection (the request is stubbed: nothing leaves this machine)."""
    import requests

    from cxr.data.download import RemoteFile, fetch
    from cxr.errors import DataError

    def no_request(*args, **kwargs):
        raise AssertionError("a request was made")

    monkeypatch.setattr(requests.Session, "get", no_request)
    with pytest.raises(DataError, match="refusing to send credentials"):
        fetch(
            RemoteFile("http://mirror.example/x.zip", "x.zip"),
            tmp_path,
            auth=("alice", "key"),
            show_progress=False,
        )


def test_truncated_archive_is_removed_as_said(world: Path) -> None:
    """Case 18: a cut archive is deleted as the message says, and the next run fetches it anew."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "x" * 5000)
    cut = archive.getvalue()[:-40]
    with serve({"images_001.tar.gz": cut}) as base:
        result = run_cli(["download", "nih-cxr14", "--mirror", base, "--parts", "1", "--quiet"])
    assert result.exit_code == 1 and "the file was removed" in result.output
    assert not (world / "data" / "_downloads" / "nih-cxr14" / "images_001.tar.gz").exists()


def test_outputs_follow_the_umask(world: Path) -> None:
    """Case 17: datasets, tables and run files get the mode a plain open() gives, not 0600/0700."""
    result = run_cli(download_args("--name", "team"))
    assert result.exit_code == 0, result.output
    mask = os.umask(0o022)  # read the umask independently of cxr.atomic
    os.umask(mask)
    assert (world / "data" / "team").stat().st_mode & 0o777 == 0o777 & ~mask == FOLDER_MODE
    for path in (
        world / "data" / "team" / "labels.csv",
        next((world / "data" / "team" / "images").rglob("*.png")),
        world / FOLD0 / "model.keras",
        world / FOLD0 / "split.csv",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask == FILE_MODE, path


def test_boxes_outside_the_image_are_clipped_and_empty_ones_dropped(world: Path) -> None:
    """Case 7: a box partly outside covers only its inside part; one wholly outside is dropped."""
    # wholly left of the image: no pixel, no wrap-around
    assert box_mask((64, 64), [Box(-10, 10, 5, 5)]).sum() == 0
    assert box_mask((64, 64), [Box(-10, 10, 15, 5)]).sum() == 5 * 5
    image = first_validation_image()
    boxes = (
        '[{"x": -10, "y": 10, "w": 15, "h": 5, "label": "a"}, {"x": 70, "y": 1, "w": 5, "h": 5}]'
    )
    edit_labels(lambda t: t.assign(boxes=np.where(t["image"] == image, boxes, t["boxes"])))
    cleaned = read_labels(world / DATASET).set_index("image").loc[image, "boxes"]
    assert cleaned == '[{"x": 0.0, "y": 10.0, "w": 5.0, "h": 5.0, "label": "a"}]'


def test_other_faults_are_one_line(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class, not the example: any OSError, an interrupt or TensorFlow's out-of-memory."""
    import tensorflow as tf

    import cxr.evaluate

    faults = {
        "no space left to write": OSError(errno.ENOSPC, "No space left on device", "runs/x"),
        "not allowed to write or read runs/x": PermissionError(
            errno.EACCES, "Permission denied", "runs/x"
        ),
        "out of memory on the device": tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor"
        ),
        "interrupted": KeyboardInterrupt(),
    }
    for message, fault in faults.items():

        def fail(*args, fault=fault, **kwargs):
            raise fault

        monkeypatch.setattr(cxr.evaluate, "evaluate", fail)
        result = run_cli(["evaluate", "--config", "base.yaml"])
        assert result.exit_code in (1, 130) and message in result.output, result.output


def test_user_csv_that_is_not_utf8_or_has_a_bom(world: Path) -> None:
    rows = "path,label\n" + "".join(f"{i}.png,{'normal' if i % 2 else 'sick'}\n" for i in range(6))
    for i in range(6):
        Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(
            make_parents(world / "u" / f"{i}.png")
        )
    (world / "u" / "list.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())  # Excel's UTF-8 CSV
    result = run_cli(
        ["download", "folder", "--csv", "u/list.csv", "--folds", "2", "--quiet", "--name", "bom"]
    )
    assert result.exit_code == 0, result.output
    (world / "u" / "list.csv").write_bytes(rows.replace("sick", "kr\xe4nk").encode("latin-1"))
    result = run_cli(
        ["download", "folder", "--csv", "u/list.csv", "--folds", "2", "--quiet", "--name", "latin"]
    )
    assert result.exit_code == 1 and "not UTF-8 text" in result.output


HOSTILE_CLASS = "<svg/onload=alert(1)>|x"
FORMULAS = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+A1", "-A1", "a|b"]


def runs_formula(cell: str) -> bool:
    """What Excel or LibreOffice would run as a formula: by hand, not through cxr's own check."""
    if cell[:1] not in ("=", "+", "-", "@", "\t", "\r"):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def test_user_text_is_inert_in_every_table_and_the_model_card(world: Path) -> None:
    """#23: a class named like HTML with a pipe, subgroup values and patient ids that are formulas;
    every CSV a run writes (listed, not named one by one) is spreadsheet-safe, header included,
    and the Markdown and HTML cards show the text without running it or breaking a table."""
    edit_labels(
        lambda t: t.assign(
            label=t["label"].replace("pneumonia", HOSTILE_CLASS),
            patient_id="@" + t["patient_id"].astype(str),
            site=[FORMULAS[i % len(FORMULAS)] for i in range(len(t))],
        ).rename(columns={"ctr": "=ctr"})
    )
    for args in (
        train_args("--overwrite"),
        ["evaluate", "--config", "base.yaml"],
        ["explain", "--config", "base.yaml"],
        ["audit", "--config", "base.yaml", "--methods", "gradcam", "--stages", "1"],
    ):
        result = run_cli(args)
        assert result.exit_code == 0, (args, result.output)
    tables = sorted((world / "runs").rglob("*.csv"))  # labels.csv is the user's own edit here
    names = {p.name for p in tables}
    assert {"history.csv", "split.csv", "predictions.csv", "subgroups.csv", "report.csv"} <= names
    assert {"localisation.csv", "shortcuts.csv", "sanity.csv", "road.csv"} <= names
    for path in tables:
        with path.open(newline="") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                bad = [cell for cell in row if runs_formula(cell)]
                assert not bad, f"{path.relative_to(world)} line {line}: {bad}"
    subgroups = pd.read_csv(world / "runs/base/evaluation/subgroups.csv", dtype=str)
    assert set(subgroups["value"]) >= {"'" + f for f in FORMULAS if f != "a|b"}
    card = (world / "runs/base/MODEL_CARD.md").read_text()
    assert "<svg" not in card and "&lt;svg/onload=alert(1)&gt;\\|x" in card
    section = card.split("## Subgroups")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) >= 2 + len(FORMULAS)
    for row in rows:  # six cell borders a row: no value opened a column of its own
        assert len(re.findall(r"(?<!\\)\|", row)) == 6, row
    page = (world / "runs/base/MODEL_CARD.html").read_text()
    assert "<svg" not in page and "&lt;svg/onload=alert(1)&gt;|x" in page
    assert "<td>site=a|b</td>" in page


def strict_json(path: Path) -> dict:
    """JSON as the standard defines it: a bare NaN or Infinity is an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_metrics_of_an_external_set_with_one_class_are_undefined(world: Path) -> None:
    """#23: sensitivity, precision and F1 of a set without positives are undefined: null in the
    JSON, said so on screen, no numpy warning, never a 0.0."""
    shutil.copytree(world / DATASET, world / "data" / "ext")
    labels = pd.read_csv(world / "data/ext/labels.csv", dtype=str, keep_default_na=False)
    labels[labels["label"] == "normal"].to_csv(world / "data/ext/labels.csv", index=False)
    result = run_cli(["evaluate", "--config", "base.yaml", "--on", "ext"])
    assert result.exit_code == 0, result.output
    assert "RuntimeWarning" not in result.output and "Warning" not in result.output, result.output
    assert "sensitivity undefined (one class)" in result.output, result.output
    assert "sensitivity 0.000" not in result.output
    report = strict_json(world / "runs/base/external/ext/metrics.json")
    ensemble = report["ensemble"]
    assert ensemble["sensitivity"] is None and ensemble["roc_auc"] is None
    assert ensemble["specificity"] is not None  # defined: there are negatives
    assert not ("f1" in ensemble and ensemble["f1"] is not None)


def test_a_copy_of_the_training_set_is_not_called_external(
    world: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """#23: --on a byte-identical copy warns with the count (file digests, compared by hand)."""
    shutil.copytree(world / DATASET, world / "data" / "copy")
    fresh = world / "data/copy/images" / Path(first_validation_image()).name
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(fresh)  # one image that is not a copy
    with caplog.at_level("WARNING"):
        result = run_cli(["evaluate", "--config", "base.yaml", "--on", "copy"])
    assert result.exit_code == 0, result.output
    assert "59 of 60 images of copy are byte-identical to images of the experiment's own" in (
        caplog.text
    )


def test_audit_on_a_read_only_dataset_without_lung_fields(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#23: one line saying what to do instead (the tests run as root, where chmod cannot forbid
    writing, so the access check is what is replaced)."""
    shutil.copytree(world / DATASET, world / "data" / "bare")
    edit = pd.read_csv(world / "data/bare/labels.csv", dtype=str, keep_default_na=False)
    edit.drop(columns="lungs").to_csv(world / "data/bare/labels.csv", index=False)
    monkeypatch.setattr(os, "access", lambda path, mode: "bare" not in str(path))
    before = fingerprint(world / "data" / "bare")
    result = run_cli(["audit", "--config", "base.yaml", "--on", "bare", "--methods", "gradcam"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "is read-only here" in errors[0] and "`cxr lungs bare --dest <that folder>`" in errors[0]
    assert fingerprint(world / "data" / "bare") == before


def test_a_full_disk_names_the_file_being_written(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#23: a write that hits a full disk raises without a file name; the line names it."""
    real = Path.write_text

    def full(self, *args, **kwargs):
        if "metrics" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    result = run_cli(["evaluate", "--config", "base.yaml"])
    assert result.exit_code == 1, result.output
    assert "no space left to write runs/base/fold0/evaluation/metrics.json" in result.output
