#!/usr/bin/env bash
# Regenerates the shipped segmentation models exactly as shipped (seed 0, CPU):
#   resources/models/brain-t1.pt         demo:brain-t1         (heads + geometric augmentation)
#   resources/models/brain-t1-robust.pt  demo:brain-t1-robust  (+ contrast augmentation)
# Data: demo subjects 0-11 and 20-27 (stage v5: 0-11 and 20-39) with whole heads (t1 domain)
# plus ten (v5: sixteen) of them as skull-stripped brains, so the models segment both;
# validation subjects 12-13 (heads and brains) choose the best epoch. Held-out subjects (14-19
# and 40-45 tuning, 100+ benchmark) and the real test scan (Colin27) are never used here.
# Lineage (each a fine-tune: on two CPU cores a run from scratch on heads takes hours):
#   V1  the first skull-stripped demo model (`uda train-source --epochs 20 --head-epochs 6` on
#       brains of subjects 0-11,20-27; git show 2c90788:resources/models/brain-t1.pt);
#   V2  V1 fine-tuned on the first heads (free fluid outside the brain mask): stage "v2" below,
#       both models at once, one run per core (git show c743856:resources/models/brain-t1.pt);
#       demo:brain-t1-robust was this stage's model until stage robust3;
#   V3  V2 fine-tuned on the heads with a dura membrane instead of that fluid
#       (uda_core/synth/head.py, 2026-12-01): stage "v3"; three epochs (28 min on one
#       thread of the shared machine; git show eb99aa0:resources/models/brain-t1.pt);
#   V4  V3 trained 5 more epochs at a lower learning rate (5e-4, cosine decay) with triple
#       cross-entropy weight on the pixels within 2 model-grid pixels (4 mm) of the brain's
#       edge, where most CSF errors of V3 were: stage "v4" (40 min on one thread); chosen
#       over V3 on subjects 40-42 (BENCHMARKS.md); git show 6f25c9d:resources/models/brain-t1.pt;
#   V5  V4 trained 8 more epochs at lr 1e-3 (cosine decay), the same edge weight, on 32 heads
#       (subjects 28-39 added) and 16 brains: stage "v5" (64 min on one thread), the shipped
#       demo:brain-t1; chosen over V4 and over the same run at lr 5e-4 on validation subjects
#       40-45 and 14-19 (BENCHMARKS.md, session 12).
#   robust3  demo:brain-t1-robust (until then V2's robust sibling): V5 trained 6 epochs at
#       lr 1e-3 with `--augment contrast`, which since 2026-12-03 gives each labelled tissue a
#       random mean of its own half of the time (SynthSeg style), on the V5 data: stage
#       "robust3" (48 min on one thread); chosen over V2's robust model on validation subjects
#       40-45 (BENCHMARKS.md, session 13).
# STAGE=v2 V1=v1.pt  bash scripts/make_demo_model.sh   (needs the generator of c743856)
# STAGE=v3 V2=v2.pt  bash scripts/make_demo_model.sh
# STAGE=v4 V3=v3.pt  bash scripts/make_demo_model.sh
# STAGE=v5 V4=v4.pt  bash scripts/make_demo_model.sh
# STAGE=robust3 V5=v5.pt  bash scripts/make_demo_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UDA=${UDA:-.venv/bin/uda}
WORK=${WORK:-$(mktemp -d)}
STAGE=${STAGE:-v5}
HEADS=0-11,20-27
BRAINS=0,2,4,6,8,10,20,22,24,26
if [ "$STAGE" = v5 ] || [ "$STAGE" = robust3 ]; then
  HEADS=0-11,20-39
  BRAINS=$BRAINS,28,30,32,34,36,38
fi
"$UDA" demo-data "$WORK/train_heads" --subjects "$HEADS" --domains t1
"$UDA" demo-data "$WORK/train_brains" --subjects "$BRAINS" --domains t1 --no-heads
"$UDA" demo-data "$WORK/val_heads" --subjects 12-13 --domains t1
"$UDA" demo-data "$WORK/val_brains" --subjects 12-13 --domains t1 --no-heads
VAL=("$WORK/val_heads/t1" "$WORK/val_brains/t1")
TRAIN=("$WORK/train_heads/t1" "$WORK/train_brains/t1")
if [ "$STAGE" = v2 ]; then
  V1=${V1:?set V1 to the first demo model (git show 2c90788:resources/models/brain-t1.pt > v1.pt)}
  "$UDA" train-source --out resources/models/brain-t1.pt --overwrite --val "${VAL[@]}" \
    --epochs 6 --head-epochs 3 --seed 0 --device cpu --augment geometric --whole-head-input \
    --init "$V1" "${TRAIN[@]}"
  "$UDA" train-source --out resources/models/brain-t1-robust.pt --overwrite --val "${VAL[@]}" \
    --epochs 5 --head-epochs 2 --seed 0 --device cpu --augment contrast --whole-head-input \
    --init "$V1" "${TRAIN[@]}"
elif [ "$STAGE" = v3 ]; then
  V2=${V2:?set V2 to the second demo model (git show c743856:resources/models/brain-t1.pt > v2.pt)}
  OMP_NUM_THREADS=1 "$UDA" train-source --out resources/models/brain-t1.pt --overwrite \
    --val "${VAL[@]}" --epochs 3 --head-epochs 1 --seed 0 --device cpu --augment geometric \
    --whole-head-input --init "$V2" "${TRAIN[@]}"
elif [ "$STAGE" = v4 ]; then
  V3=${V3:?set V3 to the third demo model (git show eb99aa0:resources/models/brain-t1.pt > v3.pt)}
  OMP_NUM_THREADS=1 "$UDA" train-source --out resources/models/brain-t1.pt --overwrite \
    --val "${VAL[@]}" --epochs 5 --head-epochs 1 --seed 0 --device cpu --augment geometric \
    --whole-head-input --lr 5e-4 --boundary-weight 2 --init "$V3" "${TRAIN[@]}"
elif [ "$STAGE" = robust3 ]; then
  V5=${V5:?set V5 to the fifth demo model (git show f01c69e:resources/models/brain-t1.pt > v5.pt)}
  OMP_NUM_THREADS=1 "$UDA" train-source --out resources/models/brain-t1-robust.pt --overwrite \
    --val "${VAL[@]}" --epochs 6 --head-epochs 1 --seed 0 --device cpu --augment contrast \
    --whole-head-input --lr 1e-3 --boundary-weight 2 --init "$V5" "${TRAIN[@]}"
else
  V4=${V4:?set V4 to the fourth demo model (git show 6f25c9d:resources/models/brain-t1.pt > v4.pt)}
  OMP_NUM_THREADS=1 "$UDA" train-source --out resources/models/brain-t1.pt --overwrite \
    --val "${VAL[@]}" --epochs 8 --head-epochs 1 --seed 0 --device cpu --augment geometric \
    --whole-head-input --lr 1e-3 --boundary-weight 2 --init "$V4" "${TRAIN[@]}"
fi
