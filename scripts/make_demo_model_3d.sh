#!/usr/bin/env bash
# Regenerates resources/models/brain-t1-3d.pt (demo:brain-t1-3d) exactly as shipped (seed 0,
# CPU, one thread): a small 3D MONAI UNet (channels 8-16-32-64, 3 stride-2 levels, one
# residual unit each, BatchNorm; 2 mm RAS grid, 48^3 voxel patches and inference windows)
# trained from scratch by `uda train-source --dims 3` on whole heads.
# Data: demo subjects 0-9, whole heads, t1 domain; validation subjects 12-13 (whole heads)
# choose the best of the checkpoints scored every 90 updates. Held-out subjects (40-42
# tuning, 100+ benchmark) and the real test scan (Colin27) are never used here.
# About 3.5 min of CPU time on one thread (38 s per 90 updates; 18 min of wall time on the
# shared 2-core machine at a load average of 13-17).
set -euo pipefail
cd "$(dirname "$0")/.."
UDA=${UDA:-.venv/bin/uda}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
export OMP_NUM_THREADS=1
"$UDA" demo-data "$WORK/train_heads" --subjects 0-9 --domains t1
"$UDA" demo-data "$WORK/val_heads" --subjects 12-13 --domains t1
"$UDA" train-source --dims 3 --channels 8,16,32,64 --roi 48 --steps 450 --batch-size 2 \
  --seed 0 --device cpu --whole-head-input --out resources/models/brain-t1-3d.pt --overwrite \
  "$WORK/train_heads/t1" --val "$WORK/val_heads/t1"
# the recipe, not the temporary paths, is what the bundle names as its command
"$PYTHON" - <<'PY'
from uda_core.models.bundle import load_model, save_bundle
path = "resources/models/brain-t1-3d.pt"
bundle = load_model(path)
bundle.provenance["command"] = "bash scripts/make_demo_model_3d.sh"
save_bundle(bundle, path, overwrite=True)
PY
