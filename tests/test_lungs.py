"""Lung fields: the plausibility check by hand, the shipped model on real NIH films, precedence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.data.labels import read_labels
from cxr.data.lungfields import lung_region
from cxr.data.plausible import mask_problem
from cxr.data.sources import DownloadOptions, download
from cxr.lungs.run import compute_lungs, has_lung_fields


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1


def test_plausible_masks_by_hand() -> None:
    shape = (100, 100)
    # two fields side by side, 22% of the image
    lungs = ellipse(shape, 50, 30, 30, 12) | ellipse(shape, 50, 70, 30, 12)
    assert mask_problem(lungs) == ""
    assert "1 main component" in mask_problem(ellipse(shape, 50, 50, 30, 25))
    small = ellipse(shape, 50, 30, 5, 4) | ellipse(shape, 50, 70, 5, 4)
    assert mask_problem(small) == "lung area 1% of the image, outside 6%-50%"
    stacked = ellipse(shape, 25, 50, 15, 25) | ellipse(shape, 75, 50, 15, 25)  # one above the other
    assert mask_problem(stacked) == "the two fields are not side by side"
    speck = lungs.copy()
    speck[2, 2] = True  # a stray pixel is not a third lung
    assert mask_problem(speck) == ""


def test_films_are_squashed_as_each_alone_by_tensorflows_resize() -> None:
    """to_input's one traced resize per film size gives each film what TensorFlow's own
    antialiased resize of it alone gives (the squash the U-Net was trained on)."""
    import tensorflow as tf

    from cxr.lungs.model import to_input

    rng = np.random.default_rng(0)
    films = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(96, 103)] * 3]
    films += [rng.integers(0, 256, (150, 120), dtype=np.uint8)]
    alone = [
        tf.image.resize(f[None, ..., None].astype(np.float32), (64, 64), antialias=True)[0]
        for f in films
    ]
    np.testing.assert_array_equal(to_input(films, 64), np.stack(alone))


@pytest.fixture(scope="module")
def nih_lungs(nih_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    dest = tmp_path_factory.mktemp("lungs")
    folder = download(
        "nih-cxr14",
        DownloadOptions(dest=dest, from_dir=nih_sample, size=96, folds=2, show_progress=False),
    )
    return folder, compute_lungs(folder, batch_size=8)


def test_plausibility_check_agrees_with_scipys_measurements() -> None:
    """The check counts components and centres itself; scipy's own sum and centre_of_mass, the
    check's former implementation, must give the same verdict and the same centres."""
    from scipy import ndimage

    from cxr.data.plausible import MAIN_COMPONENT, _centre

    rng = np.random.default_rng(7)
    verdicts = set()
    for _ in range(60):
        shape = (int(rng.integers(60, 200)), int(rng.integers(60, 200)))
        h, w = shape
        mask = np.zeros(shape, bool)
        for _ in range(int(rng.integers(1, 4))):
            centre = (rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.85) * w)
            mask |= ellipse(shape, *centre, rng.uniform(0.1, 0.35) * h, rng.uniform(0.05, 0.2) * w)
        mask |= rng.random(shape) < rng.choice([0.0, 0.002, 0.02])  # specks
        labels, count = ndimage.label(mask)
        sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
        main = [i + 1 for i, size in enumerate(sizes) if size >= MAIN_COMPONENT * mask.sum()]
        for label, centre in zip(main, ndimage.center_of_mass(mask, labels, main), strict=True):
            assert np.allclose(_centre(labels == label), centre, atol=1e-9)
        problem = mask_problem(mask)
        verdicts.add(problem.split(" ")[0] if problem else "plausible")
        if not 0.06 <= mask.mean() <= 0.5:
            assert problem.startswith("lung area")
        elif len(main) != 2:
            assert problem == f"{len(main)} main component(s), expected two lung fields"
        else:
            (y0, x0), (y1, x1) = ndimage.center_of_mass(mask, labels, main)
            apart = abs(y0 - y1) <= 0.25 * h and abs(x0 - x1) >= 0.15 * w
            assert problem == ("" if apart else "the two fields are not side by side")
    assert len(verdicts) >= 3, verdicts  # the random masks reach several branches


def test_shipped_model_finds_lungs_on_real_radiographs(nih_lungs) -> None:
    """40 real NIH films (none seen in training): nearly every mask is two plausible lung fields."""
    folder, result = nih_lungs
    table = read_labels(folder)
    assert result.computed == len(table) == 40 and has_lung_fields(folder)
    for row in table.itertuples():
        mask = np.asarray(Image.open(folder / row.lung_mask))
        assert (
            row.lung_mask == f"lungs/{row.image}"
            and mask.shape == (96, 96)
            and set(np.unique(mask)) <= {0, 255}
        )
    plausible = table["lung_mask_plausible"].astype(int)
    assert plausible.mean() >= 0.85, table.loc[plausible == 0, ["image", "lung_mask_problem"]]
    assert sorted(result.implausible) == sorted(table.loc[plausible == 0, "image"])


def test_rerun_skips_and_overwrite_recomputes(nih_lungs, tmp_path: Path) -> None:
    folder = shutil.copytree(nih_lungs[0], tmp_path / "copy")
    assert compute_lungs(folder).computed == 0
    first = folder / read_labels(folder)["lung_mask"].iloc[0]
    first.unlink()
    assert compute_lungs(folder).computed == 1 and first.is_file()
    assert compute_lungs(folder, overwrite=True).computed == 40


def test_a_datasets_own_lung_fields_are_never_replaced(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(synthetic_dataset, tmp_path / "syn")
    before = (folder / "labels.csv").read_bytes()
    assert has_lung_fields(folder) and compute_lungs(folder, overwrite=True).computed == 0
    assert (folder / "labels.csv").read_bytes() == before and not (folder / "lungs").exists()
    row = read_labels(folder).iloc[0].to_dict()
    assert lung_region(folder, row, (64, 64)).sum() > 0  # the phantom's own lung boxes


def test_implausible_masks_are_left_out(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "m.png")
    row = {"lung_mask": "m.png", "lung_mask_plausible": "0"}
    assert lung_region(tmp_path, row, (8, 8)) is None
    assert lung_region(tmp_path, {**row, "lung_mask_plausible": "1"}, (8, 8)).all()
    assert lung_region(tmp_path, {"image": "x.png"}, (8, 8)) is None  # nothing known


def test_a_users_own_mask_is_kept(nih_lungs, tmp_path: Path) -> None:
    folder = shutil.copytree(nih_lungs[0], tmp_path / "own")
    table = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    table.loc[0, "lung_mask"] = "mine/first.png"
    table.to_csv(folder / "labels.csv", index=False)
    compute_lungs(folder, overwrite=True)
    assert (
        pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False).loc[0, "lung_mask"]
        == "mine/first.png"
    )


def test_audit_finds_lung_fields_itself_on_real_radiographs(
    nih_sample: Path, tmp_path: Path
) -> None:
    """No lung fields: the audit runs the shipped model first, then measures maps on its masks."""
    from conftest import tiny_config

    from cxr.audit.run import audit_fold
    from cxr.train import train

    folder = download(
        "nih-cxr14",
        DownloadOptions(dest=tmp_path, from_dir=nih_sample, size=64, folds=2, show_progress=False),
    )
    assert not has_lung_fields(folder)
    cfg = tiny_config(folder, tmp_path / "runs", "train.epochs=1")
    train(cfg, fold=0)
    result = audit_fold(cfg, 0, ["gradcam"], sanity_stages=1)
    table = read_labels(folder).set_index("image")
    validation = pd.read_csv(tmp_path / "runs" / "tiny" / "fold0" / "split.csv").query(
        "split == 'validation'"
    )["image"]
    # the audited fold's images only (#27): the other folds' are left for `cxr lungs`
    assert has_lung_fields(folder, set(validation)) and not has_lung_fields(folder)
    assert (folder / table.loc[validation.iloc[0], "lung_mask"]).is_file()
    assert (table.drop(index=validation)["lung_mask"].fillna("") == "").all()
    plausible = table.loc[validation, "lung_mask_plausible"].astype(int)
    # implausible masks are not trusted: those images have no regions, only the border band
    shortcuts = result.shortcuts.set_index("image").loc[validation]
    assert shortcuts["implausible_lungs"].tolist() == (plausible == 0).tolist()
    assert (shortcuts.loc[(plausible == 0).to_numpy(), "peak_region"] == "").all()
    assert (shortcuts.loc[(plausible == 1).to_numpy(), "peak_region"] != "").all()
    shares = result.shortcuts.set_index("image")["outside_share"]
    assert shares.between(0, 1).all()
    # explain then knows the lung fields too: each map's peak region in the report, contours on
    # request
    from cxr.explain.run import ExplainOptions, explain_fold

    outlined = tiny_config(folder, tmp_path / "runs", "train.epochs=1", "explain.lungs=true")
    report = explain_fold(outlined, 0, ExplainOptions()).report.set_index("image")
    known = table.loc[report.index, "lung_mask_plausible"].astype(int) == 1
    assert (report.loc[known, "peak_region"].fillna("") != "").all()
    assert (report.loc[~known, "peak_region"].fillna("") == "").all()
    overlay = np.asarray(
        Image.open(tmp_path / "runs" / "tiny" / "explain" / "fold0" / report["overlay"].iloc[0])
    )
    cyan = (overlay[..., 0] == 0) & (overlay[..., 1] == 255) & (overlay[..., 2] == 255)
    assert cyan.any() == bool(known.iloc[0])
    data = (tmp_path / "runs" / "tiny" / "explain" / "fold0" / "review.js").read_text()
    rows = json.loads(data.removeprefix("window.CXR_REVIEW = ").removesuffix(";\n"))["rows"]
    shown = {r["image"]: r["peak_region"] for r in rows}
    assert shown == report["peak_region"].fillna("").to_dict()


def test_an_unreadable_image_is_skipped_and_listed(nih_lungs, tmp_path: Path) -> None:
    """Its header is whole (the dataset checks pass) but its pixels are cut: no mask, no abort."""
    folder = shutil.copytree(nih_lungs[0], tmp_path / "cut")
    first = read_labels(folder)["image"].iloc[0]
    data = (folder / first).read_bytes()
    (folder / first).write_bytes(data[: len(data) // 3])
    result = compute_lungs(folder, overwrite=True)
    assert result.unreadable == [first] and result.computed == 39
    row = (
        pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
        .set_index("image")
        .loc[first]
    )
    assert row["lung_mask"] == "" and row["lung_mask_problem"].startswith("unreadable image")


def test_an_interrupted_run_keeps_the_masks_it_wrote(nih_lungs, tmp_path: Path) -> None:
    """#23: killed after writing masks but before labels.csv: the rerun reads them back."""
    folder = shutil.copytree(nih_lungs[0], tmp_path / "killed")
    done = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    done.drop(columns=["lung_mask", "lung_mask_plausible", "lung_mask_problem"]).to_csv(
        folder / "labels.csv", index=False
    )
    (folder / done["lung_mask"].iloc[0]).unlink()  # one mask not written yet
    result = compute_lungs(folder)
    assert (result.computed, result.skipped) == (1, 39)
    again = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    columns = ["image", "lung_mask", "lung_mask_plausible", "lung_mask_problem"]
    assert again[columns].equals(done[columns])


def test_audit_without_any_plausible_lung_field_finishes(tmp_path: Path) -> None:
    """#23: noise films give no plausible lung mask; the audit judges them by the border band, says
    how many once, and writes every other part."""
    from conftest import tiny_config
    from typer.testing import CliRunner

    from cxr.cli import app
    from cxr.config import dump_config
    from cxr.train import train

    rng = np.random.default_rng(0)
    for i in range(24):
        pixels = rng.integers(0, 256, (64, 64), dtype=np.uint8) if i % 2 else np.full((64, 64), 255)
        path = tmp_path / "noise" / ("a" if i < 12 else "b") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path)
    folder = download(
        "folder",
        DownloadOptions(
            dest=tmp_path / "data", from_dir=tmp_path / "noise", folds=2, show_progress=False
        ),
    )
    cfg = tiny_config(folder, tmp_path / "runs", "train.epochs=1")
    train(cfg, fold=0)
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    result = CliRunner().invoke(
        app,
        ["audit", "--config", str(tmp_path / "c.yaml"), "--methods", "gradcam", "--stages", "1"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("have no plausible lung fields") == 1, result.output
    assert "12 of 12 image(s) have no plausible lung fields" in result.output
    assert "shortcut audit (border band rule" in result.output
    audit = tmp_path / "runs" / "tiny" / "audit" / "fold0"
    for name in ("sanity.csv", "faithfulness.csv", "road.csv", "shortcuts.csv", "summary.json"):
        assert (audit / name).is_file(), name
