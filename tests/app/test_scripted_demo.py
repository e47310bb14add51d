"""`uda-studio ... --screenshot PATH --exit-when-done`: the unattended click path, run as its own
process so that the app's own exit is checked (exit code 0 after a run)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import blob_volume, write_nifti


def _run_studio(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, np.ndarray]:
    shot = tmp_path / "shot.png"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "app.main", *args, "--out", str(tmp_path / "run"),
         "--screenshot", str(shot), "--exit-when-done"],
        capture_output=True, text=True, encoding="utf-8", errors="replace",
        timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "adapted.pt").is_file()
    return result, np.asarray(Image.open(shot))


def test_scripted_run_on_own_scans_exits_cleanly_with_a_screenshot(tmp_path, tiny_bundle_path):
    """The same click path on a tiny model and scan (seconds, in the default run)."""
    target = write_nifti(tmp_path / "scan.nii.gz", blob_volume())
    _, image = _run_studio(tmp_path, "--model", tiny_bundle_path, "--method", "tent",
                           "--steps", "2", target)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image.std() > 10        # not a blank window


@pytest.mark.slow
def test_scripted_demo_runs_and_writes_a_screenshot(tmp_path):
    """The built-in demo end to end (demo model, three subjects): about 30 s on 2 cores."""
    _, image = _run_studio(tmp_path, "--demo", "t2", "--method", "tent", "--steps", "4")
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image.std() > 10        # not a blank window
