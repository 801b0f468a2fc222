"""Each source end to end: real NIH files, a DICOM set and archives served on 127.0.0.1, local
folders."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Behaviour, make_dicom, serve
from PIL import Image

from cxr.data.labels import decode_boxes, read_labels
from cxr.data.sources import SOURCES, DownloadOptions, download, get_source
from cxr.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def nih_dataset(nih_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("nih")
    return download(
        "nih-cxr14",
        DownloadOptions(dest=dest, from_dir=nih_sample, size=256, folds=3, show_progress=False),
    )


def test_nih_sample_converts_with_patients_and_labels(nih_dataset: Path, nih_sample: Path) -> None:
    table = read_labels(nih_dataset)
    entries = pd.read_csv(nih_sample / "Data_Entry_2017.csv", index_col=False)
    assert len(table) == len(entries) == 40
    assert (
        (table["label"] == "cardiomegaly").sum()
        == entries["Finding Labels"].str.contains("Cardiomegaly").sum()
        > 0
    )
    assert set(table["label"]) == {"cardiomegaly", "no_cardiomegaly"}
    truth = dict(
        zip("images/" + entries["Image Index"], entries["Patient ID"].astype(str), strict=True)
    )
    assert table.set_index("image")["patient_id"].to_dict() == truth
    assert table.groupby("patient_id")["fold"].nunique().max() == 1
    assert (table["width"] == 256).all()


def test_nih_boxes_are_scaled_from_release_coordinates(nih_dataset: Path, nih_sample: Path) -> None:
    table = read_labels(nih_dataset).set_index("image")
    with open(nih_sample / "BBox_List_2017.csv", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len(rows) == 12
    for name, finding, x, y, w, h, *_ in rows:
        boxes = decode_boxes(table.loc[f"images/{name}", "boxes"])
        expected = [round(float(v) * 256 / 1024, 2) for v in (x, y, w, h)]
        assert any(
            [b.x, b.y, b.w, b.h] == pytest.approx(expected, abs=0.01)
            and b.label == {"Infiltrate": "Infiltration"}.get(finding, finding)  # the labels' name
            for b in boxes
        )


def test_nih_multi_label_task(nih_sample: Path, tmp_path: Path) -> None:
    folder = download(
        "nih-cxr14",
        DownloadOptions(
            dest=tmp_path, from_dir=nih_sample, task="all", size=32, folds=2, show_progress=False
        ),
    )
    table = read_labels(folder)
    assert folder.name == "nih-cxr14-all"
    assert (table["label"] == table["findings"]).all() and table["label"].str.contains(
        "|", regex=False
    ).any()


def test_nih_unknown_task(nih_sample: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="--task 'cardio': nih-cxr14 has tasks all, atelectasis, cardiomegaly"
    ):
        download(
            "nih-cxr14",
            DownloadOptions(dest=tmp_path, from_dir=nih_sample, task="cardio", show_progress=False),
        )


def test_nih_archives_via_mirror(nih_sample: Path, tmp_path: Path) -> None:
    """The real download path: fetch images_001.tar.gz from a mirror, extract, convert (CSVs placed
    by the user)."""
    entries = pd.read_csv(nih_sample / "Data_Entry_2017.csv", index_col=False)
    chosen = entries[entries["Finding Labels"].str.contains("Cardiomegaly")].head(4)
    chosen = pd.concat(
        [chosen, entries[~entries["Finding Labels"].str.contains("Cardiomegaly")].head(6)]
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in chosen["Image Index"]:
            tar.add(nih_sample / "images" / name, arcname=f"images/{name}")
    downloads = tmp_path / "_downloads" / "nih-cxr14"
    downloads.mkdir(parents=True)
    chosen.to_csv(downloads / "Data_Entry_2017_v2020.csv", index=False)
    with serve({"images_001.tar.gz": buffer.getvalue()}) as base:
        folder = download(
            "nih-cxr14",
            DownloadOptions(
                dest=tmp_path, mirror=base, parts=[1], size=64, folds=2, show_progress=False
            ),
        )
    table = read_labels(folder)
    assert len(table) == 10 and (table["label"] == "cardiomegaly").sum() == 4
    assert (downloads / "extracted" / "images_001" / "images").is_dir()


def rsna_archive(tmp_path: Path) -> bytes:
    """A small RSNA-shaped competition archive: DICOMs, the box table, the class table."""
    rng = np.random.default_rng(0)
    rows, details = [], []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(8):
            pid = f"rsna{i:02d}"
            photometric = "MONOCHROME1" if i % 3 == 0 else "MONOCHROME2"
            path = make_dicom(tmp_path / f"{pid}.dcm", rng.integers(0, 4096, (64, 64)), photometric)
            zf.write(path, f"stage_2_train_images/{pid}.dcm")
            if i % 2:
                rows += [[pid, 10, 20, 16, 8, 1], [pid, 30, 30, 10, 10, 1]]
                details.append([pid, "Lung Opacity"])
            else:
                rows.append([pid, "", "", "", "", 0])
                details.append([pid, "Normal"])
        zf.writestr(
            "stage_2_train_labels.csv",
            pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
                index=False
            ),
        )
        zf.writestr(
            "stage_2_detailed_class_info.csv",
            pd.DataFrame(details, columns=["patientId", "class"]).to_csv(index=False),
        )
    return buffer.getvalue()


def test_rsna_dicom_set_with_kaggle_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "top-secret-key")
    state = Behaviour(auth=("alice", "top-secret-key"), cut_after=500, cuts_left=1)
    caplog.set_level(logging.INFO)
    with serve(
        {"rsna-pneumonia-detection-challenge.zip": rsna_archive(tmp_path / "src")}, state
    ) as base:
        # the server stands in for Kaggle's own API (credentials never go to a --mirror)
        rsna = SOURCES["rsna-pneumonia"]
        kaggle = tuple(dataclasses.replace(f, url=f"{base}/{f.filename}") for f in rsna.files)
        monkeypatch.setitem(SOURCES, "rsna-pneumonia", dataclasses.replace(rsna, files=kaggle))
        folder = download(
            "rsna-pneumonia",
            DownloadOptions(dest=tmp_path / "data", size=32, folds=2, show_progress=False),
        )
    table = read_labels(folder).set_index("image")
    assert len(table) == 8 and (table["label"] == "pneumonia").sum() == 4
    boxes = decode_boxes(table.loc["images/rsna01.png", "boxes"])
    assert [(b.x, b.y, b.w, b.h) for b in boxes] == [
        (5, 10, 8, 4),
        (15, 15, 5, 5),
    ]  # 64 px DICOM stored at 32 px
    assert table.loc["images/rsna01.png", "rsna_class"] == "Lung Opacity"
    assert "each image is its own group" in caplog.text
    assert "top-secret-key" not in caplog.text
    assert state.requests[1]["range"] == "bytes=500-"  # resumed after the cut


def test_missing_kaggle_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(
        DataError, match="Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY"
    ):
        download("covid-radiography", DownloadOptions(dest=tmp_path, show_progress=False))


def test_covid_folders(tmp_path: Path) -> None:
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for cls, count in (("COVID", 3), ("Normal", 4), ("Viral Pneumonia", 3), ("Lung_Opacity", 2)):
        for i in range(count):
            (root / cls / "images").mkdir(parents=True, exist_ok=True)
            (root / cls / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 40), 10 * i, np.uint8)).save(
                root / cls / "images" / f"{cls}-{i}.png"
            )
            Image.fromarray(np.zeros((40, 40), np.uint8)).save(
                root / cls / "masks" / f"{cls}-{i}.png"
            )
    folder = download(
        "covid-radiography",
        DownloadOptions(dest=tmp_path / "data", from_dir=tmp_path, folds=3, show_progress=False),
    )
    table = read_labels(folder)
    assert table["label"].value_counts().to_dict() == {
        "normal": 4,
        "covid": 3,
        "viral_pneumonia": 3,
    }
    assert (table["width"] == 299).all()


def test_folder_import_skips_and_lists_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "mine"
    for cls in ("normal", "pneumonia"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((50, 60), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    Image.fromarray(np.full((50, 60), 99, np.uint8)).convert("RGB").save(
        root / "normal" / "colour.jpg"
    )
    make_dicom(root / "pneumonia" / "scan.dcm", np.arange(3000).reshape(50, 60))
    (root / "pneumonia" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "normal" / "notes.txt").write_text("hi")
    with caplog.at_level(logging.WARNING):
        folder = download(
            "folder",
            DownloadOptions(
                dest=tmp_path / "data", from_dir=root, size=32, folds=2, show_progress=False
            ),
        )
    table = read_labels(folder)
    assert folder.name == "mine"
    assert table["label"].value_counts().to_dict() == {"normal": 4, "pneumonia": 4}
    skipped = pd.read_csv(folder / "skipped.csv")
    assert skipped["image"].tolist() == ["images/pneumonia/broken.png"]
    assert "skipped 1 image(s), listed in skipped.csv" in caplog.text and "notes.txt" in caplog.text


def test_folder_csv_rejects_escaping_paths(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("path,label\n../../etc/passwd,normal\n")
    escapes = rf"list\.csv line 2, column path: path '\.\./\.\./etc/passwd' escapes {tmp_path}"
    with pytest.raises(DataError, match=escapes):
        download(
            "folder",
            DownloadOptions(dest=tmp_path / "data", csv=tmp_path / "list.csv", show_progress=False),
        )
    assert not (tmp_path / "data" / "list").exists()


def test_existing_dataset_is_kept_without_overwrite(synthetic_dataset: Path) -> None:
    before = (synthetic_dataset / "labels.csv").read_bytes()
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        download(
            "synthetic",
            DownloadOptions(
                dest=synthetic_dataset.parent, n=120, size=64, folds=5, show_progress=False
            ),
        )
    assert (synthetic_dataset / "labels.csv").read_bytes() == before


def test_overwrite_replaces_atomically(tmp_path: Path) -> None:
    options = DownloadOptions(dest=tmp_path, n=20, size=32, folds=2, show_progress=False)
    download("synthetic", options)
    options.overwrite, options.n = True, 30
    folder = download("synthetic", options)
    assert len(read_labels(folder)) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-pneumonia"]


def test_fewer_images_of_a_class_than_folds(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="too few images for 10 folds"):
        download(
            "synthetic",
            DownloadOptions(dest=tmp_path, n=12, size=32, folds=10, show_progress=False),
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_source_suggests_names() -> None:
    with pytest.raises(DataError, match="unknown dataset source 'nih'; did you mean 'nih-cxr14'"):
        get_source("nih")


def test_inject_marker_tags_positives_and_records_it(tmp_path: Path) -> None:
    """The real-radiograph twin of --bias: P = 1 tags every positive and no negative, in the border
    band's corner."""
    from cxr.data.marker import burn_marker
    from cxr.data.regions import REGIONS, region_codes

    for cls in ("normal", "tb"):
        for i in range(4):
            Image.fromarray(np.full((100, 100), 60 + 10 * i, np.uint8)).save(
                make_parents(tmp_path / "src" / cls / f"{i}.png")
            )
    folder = download(
        "folder",
        DownloadOptions(
            dest=tmp_path / "data",
            from_dir=tmp_path / "src",
            folds=2,
            inject_marker=1.0,
            show_progress=False,
        ),
    )
    table = read_labels(folder)
    assert (table["marker"] == (table["label"] == "tb").astype(int)).all()
    tagged = np.asarray(Image.open(folder / table.loc[table["label"] == "tb", "image"].iloc[0]))
    changed = tagged != np.asarray(Image.open(tmp_path / "src" / "tb" / "0.png"))
    clean = np.asarray(Image.open(folder / table.loc[table["label"] == "normal", "image"].iloc[0]))
    assert (
        changed.any()
        and (clean == np.asarray(Image.open(tmp_path / "src" / "normal" / "0.png"))).all()
    )
    codes = region_codes(np.zeros((100, 100), dtype=bool))
    assert (
        codes[burn_marker(np.zeros((100, 100), np.uint8)) > 0] == REGIONS.index("top_left")
    ).all()
    with pytest.raises(ConfigError, match="--inject-marker is not used by the synthetic source"):
        download(
            "synthetic",
            DownloadOptions(
                dest=tmp_path / "d2", n=20, size=32, folds=2, inject_marker=0.5, show_progress=False
            ),
        )


def make_parents(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(
    ("source", "given", "pattern"),
    [
        ("synthetic", {"classes": ["covid"]}, "--classes is not used by the synthetic source"),
        ("synthetic", {"mirror": "http://127.0.0.1:9"}, "--mirror is not used by the synthetic"),
        ("covid-radiography", {"task": "covid"}, "--task is not used by the covid-radiography"),
        ("nih-cxr14", {"n": 10}, "--n is not used by the nih-cxr14 source; it reads: --name"),
        ("rsna-pneumonia", {"parts": [1]}, "--parts is not used by the rsna-pneumonia source"),
        ("rsna-pneumonia", {"task": "effusion"}, "--task 'effusion': rsna-pneumonia has tasks"),
        ("folder", {"from_dir": Path("x"), "csv_root": Path("y")}, "--root says where the"),
        ("folder", {"from_dir": Path("x"), "bias": 0.5}, "--bias is not used by the folder"),
    ],
)
def test_an_option_the_source_would_ignore_is_an_error(
    source: str, given: dict, pattern: str, tmp_path: Path
) -> None:
    """Nothing is fetched or written: the check comes first."""
    with pytest.raises(ConfigError, match=pattern):
        download(source, DownloadOptions(dest=tmp_path / "data", show_progress=False, **given))
    assert not (tmp_path / "data").exists()


def test_the_source_catalog_agrees_with_the_code_and_the_docs() -> None:
    """Every option is read by some source and every source reads real options; the synthetic
    tasks are the generator's; docs/data.md and the CLI's help name every source."""
    from typer.testing import CliRunner

    from cxr.catalogs.sources import COMMON_OPTIONS, DOWNLOADED, SOURCE_SPECS
    from cxr.cli import app
    from cxr.data.synthetic import TASKS

    fields = {f.name for f in dataclasses.fields(DownloadOptions)}
    read = {name for spec in SOURCE_SPECS for name in spec.reads()}
    assert read == fields, "an option no source reads, or a source reading no option"
    assert set(COMMON_OPTIONS + DOWNLOADED) <= fields
    synthetic = next(spec for spec in SOURCE_SPECS if spec.name == "synthetic")
    assert set(synthetic.tasks) == set(TASKS)
    readme = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    help_text = CliRunner().invoke(app, ["download", "--help"], terminal_width=200).output
    for spec in SOURCE_SPECS:
        assert f"| `{spec.name}` |" in readme, spec.name
        assert spec.name in help_text and get_source(spec.name).spec is spec
