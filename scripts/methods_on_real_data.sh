#!/usr/bin/env bash
# Explanation methods side by side on real radiographs: TB against normal films of two hospitals,
# with their drawn lung masks, the demo's pna_cnn trained on fold 0; then every metric of the audit
# (localisation needs boxes, so here: the sanity check, deletion / insertion, ROAD, Average Drop,
# sparseness, max-sensitivity, random logit, and where the maps look) for several methods beside a
# random and a centre map, and `cxr explain --target top2` (each film's both classes).
#   bash scripts/methods_on_real_data.sh ../shared/data/lung-masks [METHODS]
# The folder needs images/, masks/ and a labels.csv with image, mask, finding (tb/normal) and
# patient_id columns. About 10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:?"give the folder of radiographs, e.g. ../shared/data/lung-masks"}
METHODS=${2:-gradcam,gradcam++,hirescam,layercam,xgradcam,eigencam,saliency}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python - "$SOURCE/labels.csv" "$WORK/list.csv" <<'PY'
import sys

import pandas as pd

table = pd.read_csv(sys.argv[1], dtype=str)
columns = {"image": "path", "finding": "label", "patient_id": "patient_id", "mask": "lung_mask"}
table[list(columns)].rename(columns=columns).to_csv(sys.argv[2], index=False)
PY
# --root: the films and masks are read where they are (nothing of them is copied into the project)
.venv/bin/cxr download folder --csv "$WORK/list.csv" --root "$SOURCE" --name tb-methods \
  --size 256 --folds 5 --overwrite --quiet
overrides=(experiment.name=tb-methods data.dataset=tb-methods data.image_size=256 train.epochs=10)
.venv/bin/cxr train --config configs/synthetic.yaml --overwrite "${overrides[@]}" | tail -1
.venv/bin/cxr evaluate --config configs/synthetic.yaml "${overrides[@]}" | head -1
.venv/bin/cxr audit --config configs/synthetic.yaml --methods "$METHODS" --stages 2 "${overrides[@]}" \
  | grep -E "ROAD|deletion area|average drop|passes|FAILS|shortcut audit \("
.venv/bin/python - runs/tb-methods/audit/fold0/methods.csv <<'PY'
import sys

import pandas as pd

table = pd.read_csv(sys.argv[1], index_col="method")
columns = [
    "randomised_spearman",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "road_gap",
    "average_drop",
    "sparseness",
    "max_sensitivity",
    "random_logit_spearman",
]
print(table[[c for c in columns if c in table]].round(3).to_string())
PY
.venv/bin/cxr explain --config configs/synthetic.yaml --target top2 --overwrite "${overrides[@]}" \
  | tail -2
.venv/bin/python - runs/tb-methods/explain/fold0/report.csv <<'PY'
import sys

import pandas as pd

report = pd.read_csv(sys.argv[1])
print(
    f"{report['image'].nunique()} films, {len(report)} rows; right/wrong by explained class:\n"
    + report.groupby(["target_class", "correct"]).size().unstack(fill_value=0).to_string()
)
PY
