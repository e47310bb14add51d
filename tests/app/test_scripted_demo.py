"""`uda-studio --demo ... --screenshot PATH --exit-when-done`: the unattended click path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image


def test_scripted_demo_runs_and_writes_a_screenshot(tmp_path):
    shot = tmp_path / "shot.png"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app.main", "--demo", "t2", "--method", "tent", "--steps", "4",
         "--out", str(tmp_path / "run"), "--screenshot", str(shot), "--exit-when-done"],
        capture_output=True, text=True, encoding="utf-8", errors="replace",
        timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "adapted.pt").is_file()
    image = np.asarray(Image.open(shot))
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image.std() > 10        # not a blank window
