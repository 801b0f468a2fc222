"""The review page in a real browser (Playwright driving Chromium): filters, sorts, counts and
order against report.csv computed here with pandas, the detail view and its keys, escaping of
user text, and the colours' contrast by the WCAG formula.

Without Playwright or a Chromium these tests are skipped with the reason; with
CXR_REQUIRE_BROWSER=1 (this project's CI) they fail instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.explain.review import audit_verdicts, review_rows, write_review
from cxr.runs import EXPLAIN_FILES


def unavailable(reason: str) -> None:
    if os.environ.get("CXR_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests required (CXR_REQUIRE_BROWSER) but {reason}")
    pytest.skip(reason)


def chromium_path() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    return os.environ.get("CXR_CHROMIUM") or next(filter(None, map(shutil.which, names)), None)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        unavailable("no Chromium found: apt-get install chromium, or set CXR_CHROMIUM")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    opened.errors = errors
    yield opened
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def explained(trained_run):
    """Fold 0 explained with fold agreement (fold 1 is trained too)."""
    from cxr.explain.options import ExplainOptions
    from cxr.explain.run import explain_fold

    result = explain_fold(trained_run, 0, ExplainOptions(overwrite=True, fold_agreement=True))
    return result.folder


def report_of(folder: Path) -> pd.DataFrame:
    report = pd.read_csv(folder / "report.csv", dtype={"patient_id": str})
    for column in ("outcome", "peak_region"):
        report[column] = report[column].fillna("")
    return report


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#grid .tile", "tiles => tiles.map(t => t.dataset.image)")


def count(page) -> int:
    return int(page.inner_text("#count"))


def test_each_filter_shows_what_report_csv_says(page, explained) -> None:
    report = report_of(explained)
    page.goto((explained / "index.html").as_uri())
    assert count(page) == len(report) == len(shown(page))
    assert int(page.inner_text("#total")) == len(report)
    cases = [
        ("#f-outcome", v, (report["correct"] == v) | (report["outcome"] == v))
        for v in ("right", "wrong", "TP", "FP", "TN", "FN")
    ]
    cases += [("#f-true", v, report["true_class"] == v) for v in ("normal", "pneumonia")]
    cases += [("#f-predicted", v, report["predicted_class"] == v) for v in ("normal", "pneumonia")]
    regions = sorted(set(report["peak_region"]) - {""})
    assert regions, "the synthetic films have lung fields: every map has a peak region"
    cases += [("#f-region", v, report["peak_region"] == v) for v in regions]
    checked = partial = 0
    for selector, value, expected in cases:
        if value not in page.eval_on_selector_all(f"{selector} option", "o => o.map(x => x.value)"):
            assert not expected.any(), f"{value} is in report.csv but not offered"
            continue
        page.select_option(selector, value)
        assert count(page) == int(expected.sum()), (selector, value)
        partial += 0 < expected.sum() < len(report)
        assert shown(page) == report.loc[expected, "image"].tolist(), (selector, value)
        page.click("#reset")
        checked += 1
    assert checked >= 8 and partial >= 4  # filters that keep some images and drop others
    # a confidence range and a class together
    page.fill("#f-cmin", "0.55")
    page.fill("#f-cmax", "0.8")
    page.select_option("#f-true", "pneumonia")
    expected = report[
        report["confidence"].between(0.55, 0.8) & (report["true_class"] == "pneumonia")
    ]
    assert count(page) == len(expected)
    assert shown(page) == expected["image"].tolist()
    # the filters live in the address, so a link opens the page filtered
    address = page.url
    assert "cmin=0.55" in address and "true=pneumonia" in address
    page.goto((explained / "index.html").as_uri())
    assert count(page) == len(report)
    page.goto(address)
    assert shown(page) == expected["image"].tolist()


def test_each_sort_orders_as_report_csv_says(page, explained) -> None:
    report = report_of(explained)
    agreement = pd.read_csv(explained / "fold_agreement.csv")
    report = report.merge(
        agreement[["image", "mean_rank_correlation"]], on="image", how="left", validate="1:1"
    )
    page.goto((explained / "index.html").as_uri())
    orders = {
        "confidence-desc": report.sort_values("confidence", ascending=False, kind="stable"),
        "confidence-asc": report.sort_values("confidence", kind="stable"),
        "outside": report.sort_values("outside_lungs", ascending=False, kind="stable"),
        "disagreement": report.sort_values("mean_rank_correlation", kind="stable"),
    }
    for sort, expected in orders.items():
        page.select_option("#f-sort", sort)
        assert shown(page) == expected["image"].tolist(), sort
    # sorted and filtered at once
    page.select_option("#f-outcome", "right")
    assert shown(page) == [
        i
        for i in orders["disagreement"]["image"]
        if i in set(report.query("correct == 'right'").image)
    ]
    # the fold agreement filter: rank correlation at most the median (to three places)
    page.click("#reset")
    threshold = round(float(report["mean_rank_correlation"].median()), 3)
    page.fill("#f-agree", str(threshold))
    expected = report[report["mean_rank_correlation"] <= threshold]
    assert 0 < len(expected) < len(report)
    assert shown(page) == expected["image"].tolist()


def test_the_detail_view_and_its_keys(page, explained) -> None:
    report = report_of(explained)
    page.goto((explained / "index.html").as_uri())
    page.select_option("#f-sort", "confidence-asc")
    order = report.sort_values("confidence", kind="stable")
    page.click("#grid .tile >> nth=1")
    assert page.is_visible("#detail")
    second = order.iloc[1]
    assert page.inner_text("#d-title") == second["image"]
    probs = dict(
        zip(
            page.eval_on_selector_all("#d-probs th", "c => c.map(x => x.textContent)"),
            page.eval_on_selector_all("#d-probs td", "c => c.map(x => Number(x.textContent))"),
            strict=True,
        )
    )
    assert probs == pytest.approx(
        {c: second[f"prob_{c}"] for c in ("normal", "pneumonia")}, abs=5e-5
    )
    cells = page.eval_on_selector_all("#d-row th", "c => c.map(x => x.textContent)")
    assert cells == report.columns.tolist()  # the whole report row
    # the film and the overlay both load, the film under the overlay
    for image in ("#d-film", "#d-overlay"):
        page.wait_for_function(f"document.querySelector('{image}').naturalWidth > 0")
    assert page.get_attribute("#d-film", "src") == second["film"]
    assert page.get_attribute("#d-overlay", "src") == second["overlay"]
    page.fill("#d-blend", "0")  # the slider: the film alone
    assert page.eval_on_selector("#d-overlay", "e => getComputedStyle(e).opacity") == "0"
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#d-title") == order.iloc[2]["image"]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#d-title") == order.iloc[0]["image"]
    page.keyboard.press("ArrowLeft")  # wraps round
    assert page.inner_text("#d-title") == order.iloc[-1]["image"]
    page.keyboard.press("Escape")
    assert not page.is_visible("#detail")


def test_boxes_are_drawn_where_labels_csv_puts_them(page, explained, trained_run) -> None:
    from cxr.data.labels import decode_boxes, read_labels

    labels = read_labels(trained_run.data.dataset_dir).set_index("image")
    report = report_of(explained)
    boxed = [i for i in report["image"] if decode_boxes(labels.loc[i, "boxes"])]
    assert boxed
    page.goto((explained / "index.html").as_uri())
    page.click(f"#grid .tile >> nth={report['image'].tolist().index(boxed[0])}")
    rects = page.eval_on_selector_all(
        "#d-svg rect", "r => r.map(x => ['x','y','width','height'].map(a => +x.getAttribute(a)))"
    )
    assert rects == [[b.x, b.y, b.w, b.h] for b in decode_boxes(labels.loc[boxed[0], "boxes"])]


def write_tiny_fold(folder: Path, names: list[str], classes: list[str]) -> pd.DataFrame:
    """A report of len(names) rows with real overlay and film files at those names."""
    rows = []
    for k, name in enumerate(names):
        stem = Path(name).stem
        for sub in ("right", "films"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(folder / sub / f"{stem}.jpg")
        rows.append(
            {
                "fold": 0,
                "image": name,
                "patient_id": f"P{k}",
                "true_class": classes[k % 2],
                "predicted_class": classes[k % 2],
                "confidence": 0.9,
                "correct": "right",
                "outcome": "",
                "method": "gradcam",
                "target_class": classes[k % 2],
                "peak_region": "",
                "outside_lungs": float("nan"),
                **{f"prob_{c}": 0.5 for c in classes},
                "overlay": f"right/{stem}.jpg",
                "film": f"films/{stem}.jpg",
            }
        )
    return pd.DataFrame(rows)


def test_user_text_stays_text(page, tmp_path: Path) -> None:
    evil = "<img src=x onerror=window.pwned=1>"
    classes = [evil, "c & d"]
    names = ["images/<img src=x onerror=window.pwned=2>.png", "images/a b#c?.png"]
    report = write_tiny_fold(tmp_path, names, classes)
    table = pd.DataFrame({"image": names, "width": 8, "height": 8, "boxes": ""})
    write_review(tmp_path, report, table, classes)
    page.goto((tmp_path / "index.html").as_uri())
    assert count(page) == 2
    captions = page.eval_on_selector_all("#grid .cap", "c => c.map(x => x.textContent)")
    assert names[0] in captions and any(evil in c for c in captions)
    page.select_option("#f-true", evil)
    assert shown(page) == [names[0]]
    page.click("#grid .tile >> nth=0")
    assert page.inner_text("#d-title") == names[0]
    # overlay files with '<', '#', '?' and a space in their names still load
    page.wait_for_function("document.querySelector('#d-overlay').naturalWidth === 8")
    page.keyboard.press("Escape")
    page.click("#reset")
    page.click("#grid .tile >> nth=1")
    page.wait_for_function("document.querySelector('#d-film').naturalWidth === 8")
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    # the data file cannot close a script tag
    assert "<" not in (tmp_path / EXPLAIN_FILES.review_data).read_text()


def luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    light, dark = sorted((luminance(a[:3]), luminance(b[:3])), reverse=True)
    return (light + 0.05) / (dark + 0.05)


COLOURS = """() => {
  const seen = [];
  const bg = (e) => {
    for (; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor;
      if (!c.startsWith('rgba(0, 0, 0, 0)')) return c;
    }
    return 'rgb(255, 255, 255)';
  };
  for (const e of document.querySelectorAll('body *')) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !e.offsetParent && getComputedStyle(e).position !== 'fixed') continue;
    seen.push([e.tagName + (e.id ? '#' + e.id : ''), getComputedStyle(e).color, bg(e)]);
  }
  return seen;
}"""


def rgb(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.findall(r"[\d.]+", text)[:3])


def test_every_text_has_contrast_of_at_least_4_5(page, explained) -> None:
    page.goto((explained / "index.html").as_uri())
    texts = page.evaluate(COLOURS)
    page.click("#grid .tile >> nth=0")
    texts += page.evaluate(COLOURS)
    assert len(texts) > 20
    low = [
        (t, c, b, round(contrast(rgb(c), rgb(b)), 2))
        for t, c, b in texts
        if contrast(rgb(c), rgb(b)) < 4.5
    ]
    assert not low, low


def test_contrast_formula_on_known_pairs() -> None:
    assert contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21)
    assert contrast((118, 118, 118), (255, 255, 255)) == pytest.approx(4.54, abs=0.01)


def test_rows_carry_the_audits_verdicts_and_agreement() -> None:
    report = pd.DataFrame(
        {
            "fold": 0,
            "image": ["a", "b", "c"],
            "target_class": "n",
            "correct": "right",
            "confidence": [0.9, 0.8, 0.7],
            "prob_n": [0.9, 0.8, 0.7],
            "overlay": "right/x.jpg",
        }
    )
    table = pd.DataFrame(
        {
            "image": ["a", "b", "c"],
            "width": 10,
            "height": 12,
            "boxes": ['[{"x": 1, "y": 2, "w": 3, "h": 4}]', "", ""],
        }
    )
    shortcuts = pd.DataFrame(
        {
            "image": ["a", "b"],
            "flagged": [False, True],
            "peak_region": ["top_left", "lung"],
            "predicted_class": ["n", "n"],
        }
    )
    verdicts = audit_verdicts(shortcuts, {"n": ["top_left"]})
    # a: peaks in a region flagged on evidence for its class; b: mostly outside the lungs
    assert verdicts["flagged"].tolist() == [True, True]
    assert audit_verdicts(shortcuts, {})["flagged"].tolist() == [False, True]
    agreement = pd.DataFrame(
        {"image": ["c"], "target_class": ["n"], "mean_rank_correlation": [0.25]}
    )
    rows = review_rows(report, table, ["n"], verdicts, agreement)
    assert [r["audit_flagged"] for r in rows] == [True, True, None]
    assert [r["agreement"] for r in rows] == [None, None, 0.25]
    assert rows[0]["boxes"] == [[1, 2, 3, 4]] and rows[0]["height"] == 12
    assert rows[2]["probabilities"] == {"n": 0.7}
    assert json.dumps(rows) and not any(
        isinstance(v, float) and math.isnan(v) for r in rows for v in r.values()
    )


def test_the_audit_adds_its_verdicts_to_the_page(page, explained, trained_run) -> None:
    """After `cxr audit` the page filters by the audit's verdict: an image is flagged when its map
    lies mostly (over half) outside the lungs or peaks in a region flagged on evidence for the
    class it was called, read here from the audit's own files."""
    from cxr.audit.run import audit_fold

    result = audit_fold(trained_run, 0, ["gradcam", "hirescam"], sanity_stages=1)
    shortcuts = pd.read_csv(result.folder / "shortcuts.csv")
    evidence = json.loads((result.folder / "summary.json").read_text())["flagged_on_evidence"]
    on_evidence = [
        region in evidence.get(called, [])
        for region, called in zip(
            shortcuts["peak_region"], shortcuts["predicted_class"], strict=True
        )
    ]
    flagged = (shortcuts["outside_share"] > 0.5) | np.array(on_evidence, dtype=bool)
    report = report_of(explained)
    assert set(shortcuts["image"]) == set(report["image"])
    page.goto((explained / "index.html").as_uri())
    assert page.is_visible("#f-audit")
    for choice, expected in (("flagged", flagged), ("not", ~flagged)):
        page.select_option("#f-audit", choice)
        names = set(shortcuts.loc[expected.to_numpy(), "image"])
        assert shown(page) == [i for i in report["image"] if i in names], choice
    # the audit's sample: its maps by method side by side in the detail view
    sample = json.loads((result.folder / "summary.json").read_text())["sample"]
    page.click("#reset")
    order = report["image"].tolist()
    page.click(f"#grid .tile >> nth={order.index(sample[0])}")
    assert page.is_visible("#d-methods-box")
    assert page.eval_on_selector_all("#d-methods figcaption", "c => c.map(x => x.textContent)") == [
        "gradcam",
        "hirescam",
    ]
    page.wait_for_function(
        "[...document.querySelectorAll('#d-methods img')].every(i => i.naturalWidth > 0)"
    )
    outside = next(i for i in order if i not in sample)
    page.keyboard.press("Escape")
    page.click(f"#grid .tile >> nth={order.index(outside)}")
    assert not page.is_visible("#d-methods-box")


def test_the_model_card_and_the_index_in_a_browser(page, explained, trained_run) -> None:
    """The card's figures are pictures that load, its code marks are rendered, its text is
    readable; the experiment's index links only to files that exist, each fold's page among
    them."""
    from cxr.evaluate import evaluate
    from cxr.runs import experiment_dir

    evaluate(trained_run, [0, 1])
    root = experiment_dir(trained_run)
    page.goto((root / "MODEL_CARD.html").as_uri())
    pictures = page.eval_on_selector_all("img", "i => i.map(x => x.getAttribute('src'))")
    assert {"evaluation/roc.png", "evaluation/calibration.png"} <= set(pictures)
    assert "explain/fold0/montage.png" in pictures
    for src in pictures:
        assert (root / src).is_file()
        page.wait_for_function(f"document.querySelector('img[src=\"{src}\"]').naturalWidth > 0")
    assert "`" not in page.inner_text("body")
    assert page.eval_on_selector_all("code", "c => c.length") >= 2
    texts = page.evaluate(COLOURS)
    low = [t for t in texts if contrast(rgb(t[1]), rgb(t[2])) < 4.5]
    assert not low, low
    page.click("text=review page")
    page.wait_for_url("**/explain/fold0/index.html*")
    page.wait_for_load_state("load")  # a click returns before the new page has run its script
    assert count(page) == len(report_of(explained))
    page.goto((root / "index.html").as_uri())
    hrefs = page.eval_on_selector_all("a", "a => a.map(x => x.getAttribute('href'))")
    assert "explain/fold0/index.html" in hrefs and "MODEL_CARD.html" in hrefs
    assert all((root / h).exists() for h in hrefs)


def test_the_experiments_page_shows_every_explained_fold(page, trained_run) -> None:
    from cxr.explain.options import ExplainOptions
    from cxr.explain.run import explain_folds
    from cxr.runs import experiment_dir

    _, combined = explain_folds(trained_run, [0, 1], ExplainOptions())
    root = experiment_dir(trained_run)
    page.goto((root / "explain" / "index.html").as_uri())
    assert page.inner_text("#title") == "cxr review: folds 0, 1"
    assert count(page) == len(combined) == len(shown(page))
    assert sorted(shown(page)) == sorted(combined["image"])
    page.select_option("#f-outcome", "wrong")
    assert count(page) == int((combined["correct"] == "wrong").sum())
    page.click("#reset")
    last = len(combined) - 1  # a fold-1 image: its files are found through fold1/
    page.click(f"#grid .tile >> nth={last}")
    for image in ("#d-film", "#d-overlay"):
        page.wait_for_function(f"document.querySelector('{image}').naturalWidth > 0")
    assert page.get_attribute("#d-overlay", "src").startswith("fold1/")
    page.goto((root / "index.html").as_uri())
    assert "explain/index.html" in page.eval_on_selector_all(
        "a", "a => a.map(x => x.getAttribute('href'))"
    )
