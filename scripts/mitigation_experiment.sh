#!/usr/bin/env bash
# Flag -> proof -> fix -> proof of the fix, on real radiographs: TB against normal, trained on one
# hospital's films (Shenzhen) with a corner tag burnt into 90% of the TB films and 10% of the
# normals, once as they are and once with data.outside_lungs=fill (the film outside the lungs and
# mediastinum filled with its mean, in training and every later read). Each run is audited on its
# own fold; then both are validated, without retraining, on another hospital's untagged films
# (Montgomery County) and compared there, paired, by `cxr compare --on`. A third run erases a random
# corner or border strip of every training film instead (train.erase_border=1); a fourth crops every
# film to its lung fields' box (data.crop=lungs), widened by 5% of the film's side; crop-tight
# crops to the box itself (data.crop_margin=0).
#   bash scripts/mitigation_experiment.sh ../shared/data/lung-masks [VARIANTS]
# VARIANTS: any of keep, fill, erase, crop, crop-tight (default all five); the datasets are made once (delete
# data/tb-sz-marker and data/tb-montgomery to make them again).
# The folder needs images/, masks/ and a labels.csv with image, mask, finding (tb/normal),
# patient_id and source (shenzhen/montgomery) columns.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:?"give the folder of radiographs, e.g. ../shared/data/lung-masks"}
VARIANTS=${2:-"keep fill erase crop crop-tight"}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for site in shenzhen montgomery; do
  .venv/bin/python scripts/nlm_site_list.py "$SOURCE/labels.csv" "$WORK/$site.csv" "$site"
done
# the drawn lung masks come along (--root: read where they are); the tag only on Shenzhen
[ -d data/tb-sz-marker ] || .venv/bin/cxr download folder --csv "$WORK/shenzhen.csv" \
  --root "$SOURCE" --name tb-sz-marker --size 256 --folds 5 --quiet --inject-marker 0.9
[ -d data/tb-montgomery ] || .venv/bin/cxr download folder --csv "$WORK/montgomery.csv" \
  --root "$SOURCE" --name tb-montgomery --size 256 --folds 5 --quiet
for variant in $VARIANTS; do
  overrides=("experiment.name=tb-sz-marker-$variant" data.dataset=tb-sz-marker data.image_size=256
    train.epochs=10)
  case $variant in
    fill) overrides+=(data.outside_lungs=fill) ;;
    erase) overrides+=(train.erase_border=1.0) ;;
    crop) overrides+=(data.crop=lungs) ;;
    crop-tight) overrides+=(data.crop=lungs data.crop_margin=0) ;;
  esac
  .venv/bin/cxr train --config configs/synthetic.yaml --overwrite "${overrides[@]}" | tail -1
  echo "== $variant: out of fold, Shenzhen (tagged)"
  .venv/bin/cxr evaluate --config configs/synthetic.yaml "${overrides[@]}" | head -1
  .venv/bin/cxr audit --config configs/synthetic.yaml --methods gradcam --stages 2 "${overrides[@]}" \
    | grep -E "FLAGGED|reverse|filled in turn|by intervention|where the maps look|not flagged"
  echo "== $variant: Montgomery County (untagged, never trained on)"
  .venv/bin/cxr evaluate --config configs/synthetic.yaml --on tb-montgomery "${overrides[@]}" \
    | grep -v "^INFO" | head -2
done
for variant in $VARIANTS; do
  [ "$variant" = keep ] && continue
  echo "== the fix ($variant), paired on the same films"
  .venv/bin/cxr compare tb-sz-marker-keep "tb-sz-marker-$variant"
  .venv/bin/cxr compare tb-sz-marker-keep "tb-sz-marker-$variant" --on tb-montgomery
done
