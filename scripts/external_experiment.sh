#!/usr/bin/env bash
# External validation on real radiographs: a TB model trained on one hospital's films (Shenzhen),
# judged out of fold there and then, without retraining, on another hospital's (Montgomery County).
#   bash scripts/external_experiment.sh ../shared/data/lung-masks [FOLDS]
# The folder needs images/ and a labels.csv with image, finding (tb/normal), patient_id and source
# (shenzhen/montgomery) columns. FOLDS (default 0,1) are trained; the ensemble is their mean.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:?"give the folder of radiographs, e.g. ../shared/data/lung-masks"}
FOLDS=${2:-0,1}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for site in shenzhen montgomery; do
  .venv/bin/python scripts/nlm_site_list.py "$SOURCE/labels.csv" "$WORK/$site.csv" "$site"
  # --root: the images and masks are read where they are; their lung masks come along
  .venv/bin/cxr download folder --csv "$WORK/$site.csv" --root "$SOURCE" --name "tb-$site" \
    --size 256 --folds 5 --overwrite --quiet
done
overrides=(experiment.name=tb-shenzhen data.dataset=tb-shenzhen data.image_size=256 train.epochs=10)
for fold in ${FOLDS//,/ }; do
  .venv/bin/cxr train --config configs/synthetic.yaml --fold "$fold" --overwrite "${overrides[@]}" | tail -1
done
echo "== out of fold, Shenzhen"
for fold in ${FOLDS//,/ }; do
  .venv/bin/cxr evaluate --config configs/synthetic.yaml --fold "$fold" "${overrides[@]}" | head -1
done
echo "== external, Montgomery County"
.venv/bin/cxr evaluate --config configs/synthetic.yaml --on tb-montgomery "${overrides[@]}" | grep -v "^INFO"
.venv/bin/cxr audit --config configs/synthetic.yaml --on tb-montgomery --fold "${FOLDS%%,*}" \
  --methods gradcam --stages 2 "${overrides[@]}" | grep -E "where the maps|^by outcome|^  |shortcut audit|FLAGGED|filled in turn|plausible"
