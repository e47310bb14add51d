"""mypy passes on uda_core with the settings in pyproject.toml ([tool.mypy]): the seams
(methods generic over their batch, tasks, listeners, events) keep their types."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_uda_core(tmp_path):
    command = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert command, "mypy is missing: install the dev extra (pip install -e .[dev])"
    result = subprocess.run([command, "--cache-dir", str(tmp_path / "mypy_cache")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
