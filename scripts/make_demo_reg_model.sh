#!/usr/bin/env bash
# Regenerates resources/models/reg-t1.pt (demo:reg-t1) exactly as shipped: the discrete
# registration net trained on T1-T1 pairs of demo subjects 0-11 and 20-27 (the training subjects
# of demo:brain-t1, simulated in memory with the demo generator's seed 0, 2 mm), best step chosen
# on T1-T1 pairs of subjects 12-13, scored on held-out subjects 100-102 (T1-T1 and T1-T2).
# Subjects 40-42 (kept for adaptation) and 100-102 are never trained on.
# Width 8 since session 8 (2026-12-01; 16 before). About 14 minutes on one CPU core; the scores
# are stored in the bundle's provenance.
set -euo pipefail
cd "$(dirname "$0")/.."
UDA=${UDA:-.venv/bin/uda}
OMP_NUM_THREADS=1 "$UDA" reg train-source --out resources/models/reg-t1.pt --overwrite \
  --subjects 0-11,20-27 --val-subjects 12-13 --eval-subjects 100-102 --eval-domain t2 \
  --steps 1200 --batch-size 8 --lr 2e-3 --width 8 --features 16 --seed 0 --threads 1 \
  --device cpu
