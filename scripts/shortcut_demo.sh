#!/usr/bin/env bash
# Does the audit catch a shortcut? Synthetic pneumonia with a corner marker that predicts the label
# (on 95% of positives, 5% of negatives) against the same data without it; train both, audit both.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
for variant in biased clean; do
  bias=(); [ "$variant" = biased ] && bias=(--bias 0.95)
  .venv/bin/cxr download synthetic --name "synthetic-$variant" --size 128 --overwrite --quiet "${bias[@]}"
  overrides=("experiment.name=shortcut-$variant" "data.dataset=synthetic-$variant" data.image_size=128)
  .venv/bin/cxr train --config configs/synthetic.yaml --overwrite "${overrides[@]}" > /dev/null
  echo "== $variant"
  .venv/bin/cxr audit --config configs/synthetic.yaml --methods gradcam --stages 2 "${overrides[@]}" | grep -E "shortcut|gradcam: pointing|FLAGGED|where the maps"
done
