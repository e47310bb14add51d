#!/usr/bin/env bash
# Regenerates the shipped segmentation models exactly as shipped (seed 0, CPU):
#   resources/models/brain-t1.pt         demo:brain-t1         (heads + geometric augmentation)
#   resources/models/brain-t1-robust.pt  demo:brain-t1-robust  (+ contrast augmentation)
# Data: demo subjects 0-11 and 20-27 with whole heads (t1 domain) plus ten of them as
# skull-stripped brains, so the models segment both; validation subjects 12-13 (heads and
# brains) choose the best epoch. Held-out subjects (40-42 tuning, 100+ benchmark) and the
# real test scan (Colin27) are never used here.
# Both start (in parallel, one run per core) from the first skull-stripped demo model (V1, the parent in their provenance:
# trained from scratch by `uda train-source --epochs 20 --head-epochs 6` on brains of
# subjects 0-11,20-27) and are fine-tuned: on two CPU cores a run from scratch on heads takes
# hours, a fine-tune minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
UDA=${UDA:-.venv/bin/uda}
WORK=${WORK:-$(mktemp -d)}
V1=${V1:?set V1 to the first demo model (git show 2c90788:resources/models/brain-t1.pt > v1.pt)}
"$UDA" demo-data "$WORK/train_heads" --subjects 0-11,20-27 --domains t1
"$UDA" demo-data "$WORK/train_brains" --subjects 0-11,20-27 --domains t1 --no-heads
"$UDA" demo-data "$WORK/val_heads" --subjects 12-13 --domains t1
"$UDA" demo-data "$WORK/val_brains" --subjects 12-13 --domains t1 --no-heads
BRAINS=()
for s in 000 002 004 006 008 010 020 022 024 026; do
  BRAINS+=("$WORK/train_brains/t1/sub-${s}_t1.nii.gz")
done
VAL=("$WORK/val_heads/t1" "$WORK/val_brains/t1")
"$UDA" train-source --out resources/models/brain-t1.pt --overwrite --val "${VAL[@]}" \
  --epochs 6 --head-epochs 3 --seed 0 --device cpu --augment geometric --whole-head-input \
  --init "$V1" "$WORK/train_heads/t1" "${BRAINS[@]}"
"$UDA" train-source --out resources/models/brain-t1-robust.pt --overwrite --val "${VAL[@]}" \
  --epochs 5 --head-epochs 2 --seed 0 --device cpu --augment contrast --whole-head-input \
  --init "$V1" "$WORK/train_heads/t1" "${BRAINS[@]}"
