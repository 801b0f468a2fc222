"""The canonical labels table: safe paths, validation on read, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxr.data.labels import (
    Box,
    check_relative_path,
    decode_boxes,
    encode_boxes,
    patient_keys,
    patient_of,
    read_labels,
)
from cxr.errors import DataError
from cxr.tables import read_csv, write_csv


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.png", "images/../../x.png", "C:\\x.png", "..\\x.png", ""]
)
def test_escaping_paths_are_rejected(path: str) -> None:
    with pytest.raises(DataError, match="escapes the dataset folder"):
        check_relative_path(path, "labels.csv line 2")


def test_relative_path_is_accepted() -> None:
    assert check_relative_path("images/a/b.png", "x") == "images/a/b.png"


def test_boxes_round_trip() -> None:
    boxes = [Box(1.0, 2.0, 3.5, 4.25, "pneumonia"), Box(5, 6, 7, 8)]
    assert decode_boxes(encode_boxes(boxes)) == boxes
    assert decode_boxes("") == [] and decode_boxes(float("nan")) == []


def make_dataset(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    for row in rows:
        target = tmp_path / row["image"]
        if target.parent == tmp_path / "images":
            target.write_bytes(b"x")
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


GOOD = {"image": "images/a.png", "label": "normal", "patient_id": "p1", "fold": 0}


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"image": "../a.png"},
            r"labels\.csv line 2: path '\.\./a\.png' escapes the dataset folder",
        ),
        ({"fold": -1}, r"line 2: fold must be a whole number >= 0"),
        ({"fold": "x"}, r"line 2: fold must be a whole number >= 0"),
        ({"label": ""}, r"labels\.csv: no row has a label"),
    ],
)
def test_bad_rows(tmp_path: Path, change: dict, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        read_labels(make_dataset(tmp_path, [{**GOOD, **change}]))


def test_missing_column_and_missing_files(tmp_path: Path) -> None:
    pd.DataFrame([{"image": "images/a.png", "label": "x"}]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(DataError, match="missing column"):
        read_labels(tmp_path)
    pd.DataFrame([GOOD, {**GOOD, "image": "images/gone.png"}]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"1 image file\(s\) listed but missing: images/gone\.png"):
        read_labels(tmp_path)


def test_no_labels_file_suggests_the_download(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no labels\.csv in .*: create the dataset first with `cxr download folder"
    ):
        read_labels(tmp_path)
    with pytest.raises(DataError, match=r"`cxr download rsna-pneumonia`"):
        read_labels(tmp_path / "rsna-pneumonia")
    with pytest.raises(DataError, match=r"`cxr download nih-cxr14 --task cardiomegaly`"):
        read_labels(tmp_path / "nih-cxr14-cardiomegaly")


def test_atomic_write_keeps_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.csv"
    write_csv(pd.DataFrame({"a": [1]}), path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError):
        write_csv(pd.DataFrame({"a": [2]}), path)
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_a_findings_boxes_under_the_labels_name_or_the_box_lists() -> None:
    """NIH's box list says Infiltrate where its labels say Infiltration; a dataset converted
    before the converter renamed it still matches."""
    from cxr.data.labels import boxes_for

    old, new = Box(0, 0, 1, 1, "Infiltrate"), Box(1, 1, 1, 1, "Infiltration")
    other = Box(2, 2, 1, 1, "Nodules")
    assert boxes_for([old, new, other], "Infiltration") == [old, new]
    assert boxes_for([old, new, other], "Nodule") == [] and boxes_for([other], "Nodules") == [other]


def test_bytes_written_whole_with_the_umask_mode_or_not_at_all(tmp_path: Path) -> None:
    from cxr.atomic import FILE_MODE, write_bytes_atomic

    path = tmp_path / "sub" / "o.jpg"
    write_bytes_atomic(path, b"first")
    write_bytes_atomic(path, memoryview(b"second"))
    assert path.read_bytes() == b"second" and path.stat().st_mode & 0o777 == FILE_MODE

    with pytest.raises(TypeError):  # the write fails after the temporary file was made
        write_bytes_atomic(path, "text, not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["o.jpg"]


def test_missing_labels_are_left_out_with_their_lines_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        GOOD,
        {**GOOD, "image": "images/b.png", "label": "NaN"},
        {**GOOD, "image": "images/c.png", "label": "null"},
    ]
    with caplog.at_level("WARNING"):
        table = read_labels(make_dataset(tmp_path, rows), check_files=False)
    assert table["image"].tolist() == ["images/a.png"]
    assert "2 row(s) without a label left out (lines 3, 4)" in caplog.text


def test_a_row_without_a_patient_is_its_own_patient() -> None:
    table = pd.DataFrame(
        {"image": ["images/a.png", "images/b.png", "images/c.png"], "patient_id": ["p1", "", "p1"]}
    )
    rows = table.to_dict("records")
    assert [patient_of(row) for row in rows] == ["p1", "images/b.png", "p1"]
    assert [patient_of(row) for row in rows] == patient_keys(table).tolist()
    assert patient_of({"image": "images/d.png"}) == "images/d.png"  # no patient column at all
    with_gap = pd.DataFrame({"image": ["images/e.png"], "patient_id": [float("nan")]})
    assert patient_of(with_gap.to_dict("records")[0]) == patient_keys(with_gap)[0] == "images/e.png"


@pytest.mark.parametrize("word", ["NaN", "nan", "NA", "None", "null", "N/A", " ", ""])
def test_words_for_nothing_are_no_patient(word: str) -> None:
    """#23: 'NaN', 'NA', 'None', 'null' are a missing id, not one patient shared by strangers."""
    from cxr.data.folds import compute_patient_keys
    from cxr.evaluate import patient_metrics

    images = [f"images/{i}.png" for i in range(6)]
    table = pd.DataFrame({"image": images, "patient_id": [word, word, "p1", "p1", "p2", "p2"]})
    rows = table.to_dict("records")
    assert patient_keys(table).tolist() == [*images[:2], "p1", "p1", "p2", "p2"]
    assert [patient_of(row) for row in rows] == patient_keys(table).tolist()
    assert compute_patient_keys(table).nunique() == 4  # the folds keep strangers apart too
    predictions = table.assign(
        true_label=["sick", "normal", "sick", "sick", "normal", "normal"],
        prob_sick=[0.9, 0.2, 0.8, 0.4, 0.1, 0.3],
    )
    # per patient: p1 and p2 only; the two strangers are not merged into a third patient
    found = patient_metrics(predictions, ["normal", "sick"], 1)
    assert found is not None and found["max"].n == found["mean"].n == 2


def test_csv_text_is_spreadsheet_safe_and_survives_the_round_trip(tmp_path: Path) -> None:
    """#23: formulas are quoted for Excel and LibreOffice; cxr reads back exactly what it had."""
    values = ["=cmd|' /C calc'!A0", "@SUM(A1)", "+1+1", "-x", "'=already", "-5", "1e3"]
    values += ["plain", "'quoted", "\t=tab"]
    table = pd.DataFrame({"text": values, "n": range(len(values))})
    write_csv(table, tmp_path / "t.csv")
    raw = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)["text"].tolist()
    # by hand: what a spreadsheet would run gets one quote in front; numbers and plain text do not
    quoted = ["'" + v for v in values[:5]] + values[5:9] + ["'" + values[9]]
    assert raw == quoted
    back = read_csv(tmp_path / "t.csv", dtype={"text": str}, keep_default_na=False)
    assert back["text"].tolist() == values and back["n"].tolist() == list(range(len(values)))
