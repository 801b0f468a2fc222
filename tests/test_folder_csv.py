"""A user's own annotated radiographs through `cxr download folder --csv`: boxes, lung fields,
masks and extra columns reach labels.csv at the stored size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.data.labels import decode_boxes
from cxr.data.sources import DownloadOptions, download
from cxr.errors import CxrError

WIDTH, HEIGHT, SIZE = 100, 80, 40  # stored 40 x 40: x scales by 0.4, y by 0.5


def box(x: float, y: float, w: float, h: float, label: str = "") -> dict:
    return {"x": x, "y": y, "w": w, "h": h, "label": label}


@pytest.fixture
def annotated(tmp_path: Path) -> tuple[Path, Path]:
    """Images and masks in a read-only-like data folder, the CSV elsewhere: (csv, root)."""
    root = tmp_path / "hospital"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        label = "pneumonia" if i % 2 else "normal"
        image = rng.integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8)
        path = root / "images" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[10 + i : 70, 10:45] = 255
        mask[10:70, 55 : 90 - i] = 255
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
        rows.append(
            {
                "path": f"images/p{i}.png",
                "label": label,
                "patient_id": f"P{i // 2}",
                "boxes": json.dumps([box(20, 30, 10, 8, "opacity")] if i % 2 else []),
                "lungs": json.dumps([box(10, 10, 35, 60), box(55, 10, 35, 60)]),
                "lung_mask": f"masks/p{i}.png",
                "view": "PA" if i < 4 else "AP",
                "age": str(30 + i),
            }
        )
    csv = tmp_path / "lists" / "mine.csv"
    csv.parent.mkdir()
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, root


def options(tmp_path: Path, csv: Path, root: Path | None, **extra) -> DownloadOptions:
    return DownloadOptions(
        dest=tmp_path / "data",
        name="mine",
        size=SIZE,
        folds=2,
        csv=csv,
        csv_root=root,
        show_progress=False,
        **extra,
    )


def test_every_annotation_reaches_labels_csv_at_the_stored_size(
    annotated: tuple[Path, Path], tmp_path: Path
) -> None:
    csv, root = annotated
    folder = download("folder", options(tmp_path, csv, root))
    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    # not images/images/...
    assert sorted(labels["image"]) == [f"images/p{i}.png" for i in range(8)]
    first = labels.set_index("image").loc["images/p1.png"]
    (stored,) = decode_boxes(first["boxes"])
    assert (stored.x, stored.y, stored.w, stored.h, stored.label) == (8, 15, 4, 4, "opacity")
    left, right = decode_boxes(first["lungs"])
    assert (left.x, left.y, left.w, left.h) == (4, 5, 14, 30)
    assert (right.x, right.w) == (22, 14)
    assert first["view"] == "PA" and first["age"] == "31"
    # the mask: nearest-neighbour at the stored size, 0/255, beside the images
    assert first["lung_mask"] == "masks/p1.png"
    source = Image.open(root / "masks" / "p1.png").resize((SIZE, SIZE), Image.Resampling.NEAREST)
    stored_mask = np.asarray(Image.open(folder / "masks" / "p1.png"))
    np.testing.assert_array_equal(stored_mask, np.asarray(source))
    assert set(np.unique(stored_mask)) == {0, 255}


def test_a_users_mask_is_taken_as_the_lung_fields(
    annotated: tuple[Path, Path], tmp_path: Path
) -> None:
    from cxr.lungs.run import compute_lungs, has_lung_fields

    csv, root = annotated
    table = pd.read_csv(csv).drop(columns="lungs")
    table.to_csv(csv, index=False)
    folder = download("folder", options(tmp_path, csv, root))
    assert has_lung_fields(folder)
    result = compute_lungs(folder)  # never overwrites a user's own
    assert result.computed == 0
    assert (folder / "masks" / "p0.png").is_file() and not (folder / "lungs").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.assign(boxes=t["boxes"].where(t.index != 1, '[{"x": 1}]')),
            "mine.csv line 3, column boxes: bad boxes value",
        ),
        (
            lambda t: t.assign(
                lungs=t["lungs"].where(t.index != 2, '[{"x": "a", "y": 1, "w": 2, "h": 2}]')
            ),
            "mine.csv line 4, column lungs: box ('a', 1, 2, 2)",
        ),
        (
            lambda t: t.assign(lung_mask=t["lung_mask"].where(t.index != 0, "masks/none.png")),
            "mine.csv line 2, column lung_mask: mask",
        ),
        (
            lambda t: t.assign(path=t["path"].where(t.index != 0, "../x.png")),
            "mine.csv line 2, column path: path '../x.png' escapes /",
        ),
        (
            lambda t: t.assign(fold="1", source_fold="2"),
            "column(s) fold are cxr's own in labels.csv and source_fold are taken too",
        ),
    ],
)
def test_a_malformed_value_is_refused_with_its_row(
    annotated: tuple[Path, Path], tmp_path: Path, edit, message: str
) -> None:
    csv, root = annotated
    edit(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    with pytest.raises(CxrError, match=message.replace("(", r"\(").replace(")", r"\)")):
        download("folder", options(tmp_path, csv, root))
    assert not (tmp_path / "data" / "mine").exists()


def test_root_is_where_the_paths_start(annotated: tuple[Path, Path], tmp_path: Path) -> None:
    csv, root = annotated
    # without --root the paths are taken from the CSV's folder, where the images are not
    with pytest.raises(CxrError, match="not found"):
        download("folder", options(tmp_path, csv, None))
    with pytest.raises(CxrError, match="--root says where the paths of a --csv start"):
        download("folder", options(tmp_path, None, root, from_dir=root))


def test_the_annotations_reach_explain_and_audit(
    annotated: tuple[Path, Path], tmp_path: Path, trained_run
) -> None:
    """The imported boxes are what explain's box share and the audit's localisation use, and
    the imported lung fields what the shortcut audit uses (a trained model run --on them)."""
    from cxr.audit.run import audit_fold
    from cxr.explain.options import ExplainOptions
    from cxr.explain.run import explain_fold
    from cxr.external import open_external

    csv, root = annotated
    folder = download("folder", options(tmp_path, csv, root))
    on = open_external(trained_run, str(folder))
    report = explain_fold(trained_run, 0, ExplainOptions(target="true"), on).report
    boxed = report["image"].isin([f"images/p{i}.png" for i in (1, 3, 5, 7)])
    assert report.loc[boxed, "box_energy_share"].notna().all()
    assert report.loc[~boxed, "box_energy_share"].isna().all()
    audited = audit_fold(trained_run, 0, ["gradcam"], sanity_stages=1, on=on)
    scored = audited.rows["localisation"].query("method == 'gradcam'")
    assert sorted(scored["image"]) == [f"images/p{i}.png" for i in (1, 3, 5, 7)]
    assert (audited.shortcuts["peak_region"] != "").all() and audited.summary.shortcuts.regions


def test_columns_cxr_writes_itself_are_kept_under_a_prefix(
    annotated: tuple[Path, Path], tmp_path: Path, caplog
) -> None:
    """A user's width, height and fold are carried as source_width, source_height, source_fold;
    labels.csv's own are the stored image's size and the new folds."""
    csv, root = annotated
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.assign(width="1024", height="2048", fold="9").to_csv(csv, index=False)
    folder = download("folder", options(tmp_path, csv, root))
    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    assert set(labels["source_width"]) == {"1024"} and set(labels["source_height"]) == {"2048"}
    assert set(labels["source_fold"]) == {"9"} and set(labels["fold"]) <= {"0", "1"}
    assert set(labels["width"]) == {str(SIZE)} and set(labels["height"]) == {str(SIZE)}
    said = [r.getMessage() for r in caplog.records if "cxr's own" in r.getMessage()]
    assert len(said) == 1 and "kept as source_width, source_height, source_fold" in said[0]
