#!/usr/bin/env bash
# The main job end to end on the embedded synthetic default, on a fresh machine:
# install, make the synthetic pneumonia dataset, train fold 0, evaluate it, explain every image of the fold,
# and audit the explanations (localisation, randomisation sanity check, faithfulness, shortcuts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
started=$SECONDS  # after the install: the demo's own time
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
CONFIG=configs/synthetic.yaml
steps=""
step() {  # run one step, keep its time for the summary at the end
  local name=$1 began=$SECONDS
  shift
  "$@"
  steps="$steps $name $((SECONDS - began)) s,"
}
step download .venv/bin/cxr download synthetic --overwrite
step train .venv/bin/cxr train --config "$CONFIG" --overwrite
.venv/bin/python scripts/show_history.py runs/synthetic-pna/fold0/history.csv
step evaluate .venv/bin/cxr evaluate --config "$CONFIG"
step explain .venv/bin/cxr explain --config "$CONFIG"
step audit .venv/bin/cxr audit --config "$CONFIG" --methods gradcam,hirescam,gradcam++,guided_backprop
echo "start here: runs/synthetic-pna/index.html (model card, review page, audit, CLAIM.md)"
echo "review page: runs/synthetic-pna/explain/fold0/index.html  report: report.csv  montage: montage.png"
elapsed=$((SECONDS - started))
echo "demo finished in $((elapsed / 60)) min $((elapsed % 60)) s (after the install):${steps%,}"
