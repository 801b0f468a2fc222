#!/usr/bin/env bash
# Does the audit catch a shortcut on real radiographs? TB against normal films, trained twice: once with a
# corner tag burned into 90% of the TB films and 10% of the normals (--inject-marker 0.9), once without.
# The audit should flag the tagged model (peaks in the tagged corner) and not flag the clean one for that corner.
#   bash scripts/marker_experiment.sh ../shared/data/lung-masks
# The folder needs images/ and a labels.csv with image, finding (tb/normal) and patient_id columns.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:?"give the folder of radiographs, e.g. ../shared/data/lung-masks"}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tb"
cp -r "$SOURCE/images" "$WORK/tb/images"  # a copy: the import reads only files inside its own folder
.venv/bin/python - "$SOURCE/labels.csv" "$WORK/tb/list.csv" <<'PY'
import sys

import pandas as pd

table = pd.read_csv(sys.argv[1], dtype=str)
pd.DataFrame({"path": table["image"], "label": table["finding"], "patient_id": table["patient_id"]}).to_csv(sys.argv[2], index=False)
PY
for variant in clean marker; do
  inject=(); [ "$variant" = marker ] && inject=(--inject-marker 0.9)
  .venv/bin/cxr download folder --csv "$WORK/tb/list.csv" --name "tb-$variant" --size 256 --folds 5 --overwrite --quiet "${inject[@]}"
  overrides=("experiment.name=tb-$variant" "data.dataset=tb-$variant" data.image_size=256 train.epochs=10)
  .venv/bin/cxr train --config configs/synthetic.yaml --overwrite "${overrides[@]}" | tail -1
  echo "== $variant"
  .venv/bin/cxr evaluate --config configs/synthetic.yaml "${overrides[@]}" | head -1
  .venv/bin/cxr audit --config configs/synthetic.yaml --methods gradcam --stages 2 "${overrides[@]}" \
    | grep -E "where the maps|^by outcome|^  |shortcut audit|FLAGGED|filled in turn|plausible"
done
