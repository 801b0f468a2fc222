"""Screenshots of a fold's review page for the docs: the grid, filtered to one outcome, and the
detail view, in headless Chromium through Playwright.

    .venv/bin/python scripts/screenshot_review.py runs/synthetic-pna/explain/fold0 docs/images
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(folder: Path, out: Path, chromium: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium or shutil.which("chromium") or "chromium"
        )
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto((folder.resolve() / "index.html").as_uri() + "#sort=confidence-asc")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "review.jpg"), quality=85)
        # an image of the audit's sample, when there is one: its maps by method are shown too
        first = page.evaluate("() => shown.findIndex(i => D.rows[i].methods.length > 0)")
        page.click(f"#grid .tile >> nth={max(first, 0)}")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "review-detail.jpg"), quality=85)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])
