#!/usr/bin/env bash
# Regenerates resources/models/brain-t1.pt (demo:brain-t1) exactly as shipped:
# 20 labelled t1 training subjects, 2 validation subjects (choose the best epoch), seed 0.
# Held-out evaluation subjects (100+) are never used here.
set -euo pipefail
cd "$(dirname "$0")/.."
UDA=${UDA:-.venv/bin/uda}
WORK=${WORK:-$(mktemp -d)}
"$UDA" demo-data "$WORK/train" --subjects 0-11,20-27 --domains t1
"$UDA" demo-data "$WORK/val" --subjects 12-13 --domains t1
"$UDA" train-source --out resources/models/brain-t1.pt --overwrite --val "$WORK/val/t1" \
  --epochs 20 --head-epochs 6 --seed 0 --device cpu "$WORK/train/t1"
