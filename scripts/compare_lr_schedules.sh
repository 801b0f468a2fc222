#!/usr/bin/env bash
# Which train.lr_schedule trains best? Each schedule on fold 0 of the demo's synthetic data and,
# given the folder, of the NIH sample's cardiomegaly task; prints the best validation loss and AUC.
#   bash scripts/compare_lr_schedules.sh [../shared/data/nih-cxr14-sample]
set -euo pipefail
cd "$(dirname "$0")/.."
NIH=${1:-}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
[ -f data/synthetic-pneumonia/labels.csv ] || .venv/bin/cxr download synthetic --quiet
sets=("synthetic-pneumonia:configs/synthetic.yaml:")
if [ -n "$NIH" ]; then
  .venv/bin/cxr download nih-cxr14 --from "$NIH" --task cardiomegaly --name nih-cardiomegaly \
    --size 256 --folds 5 --overwrite --quiet
  sets+=("nih-cardiomegaly:configs/synthetic.yaml:data.image_size=256 train.epochs=10")
fi
for entry in "${sets[@]}"; do
  IFS=: read -r dataset config extra <<<"$entry"
  for schedule in constant plateau cosine; do
    name="lr-$dataset-$schedule"
    # shellcheck disable=SC2086
    .venv/bin/cxr train --config "$config" --overwrite "experiment.name=$name" \
      "data.dataset=$dataset" "train.lr_schedule=$schedule" train.monitor=val_loss $extra >/dev/null
    .venv/bin/python - "runs/$name/fold0/history.csv" "$dataset" "$schedule" <<'PY'
import sys

import pandas as pd

history = pd.read_csv(sys.argv[1])
best = history.loc[history["val_loss"].idxmin()]
print(
    f"{sys.argv[2]:>22} {sys.argv[3]:>9}: best val_loss {best['val_loss']:.4f} at epoch "
    f"{int(best['epoch']) + 1}, val AUC there {best['val_auc']:.3f}, best val AUC "
    f"{history['val_auc'].max():.3f}"
)
PY
  done
done
