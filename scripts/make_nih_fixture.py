"""Make tests/fixtures/nih-cxr14-mini/ from the team's 621-image NIH sample (run once; committed).

Keeps every image with a box, then enough images for each of the 14 findings (at least
MIN_PER_FINDING), then No Finding images, all downscaled to 128 px, with their rows of the release's
two CSVs unchanged (boxes stay in 1024-px release coordinates, as the converter expects). A user's
clone tests against it.

    python scripts/make_nih_fixture.py ../shared/data/nih-cxr14-sample tests/fixtures/nih-cxr14-mini
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image

SIZE = 128
MIN_PER_FINDING = 4
NO_FINDING = 8


def choose(entries: pd.DataFrame, boxed: set[str]) -> list[str]:
    """Box images, then the rarest findings topped up, then normals: every class, few images."""
    chosen = [name for name in entries["Image Index"] if name in boxed]
    findings = entries["Finding Labels"].str.split("|")
    counts = findings.explode().value_counts()
    for finding in counts.index[::-1]:  # rarest first, so common ones fill up on the way
        if finding == "No Finding":
            continue
        have = sum(
            finding in entries.set_index("Image Index").loc[n, "Finding Labels"].split("|")
            for n in chosen
        )
        for name in entries.loc[findings.map(lambda f, x=finding: x in f), "Image Index"]:
            if have >= MIN_PER_FINDING:
                break
            if name not in chosen:
                chosen.append(name)
                have += 1
    normals = entries.loc[entries["Finding Labels"] == "No Finding", "Image Index"]
    chosen.extend([n for n in normals if n not in chosen][:NO_FINDING])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    entries = pd.read_csv(
        args.sample / "Data_Entry_2017.csv", dtype=str, keep_default_na=False, index_col=False
    )
    box_lines = (args.sample / "BBox_List_2017.csv").read_text(encoding="utf-8").splitlines()
    boxed = {line.split(",")[0] for line in box_lines[1:]}
    chosen = set(choose(entries, boxed))
    shutil.rmtree(args.dest, ignore_errors=True)
    (args.dest / "images").mkdir(parents=True)
    for name in sorted(chosen):
        with Image.open(args.sample / "images" / name) as image:
            small = image.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            small.save(args.dest / "images" / name, optimize=True)
    # keep the release's own text (two-column headers, trailing commas) by filtering lines, not
    # re-writing a table
    entry_lines = (args.sample / "Data_Entry_2017.csv").read_text(encoding="utf-8").splitlines()
    kept = [entry_lines[0]] + [line for line in entry_lines[1:] if line.split(",")[0] in chosen]
    (args.dest / "Data_Entry_2017.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    shutil.copyfile(args.sample / "BBox_List_2017.csv", args.dest / "BBox_List_2017.csv")
    print(f"{len(chosen)} images -> {args.dest}")


if __name__ == "__main__":
    main()
