"""The installers tested by installing them (slow: minutes to tens of minutes; `-m slow`).

- The workstation .deb: built by packaging/build_linux.sh, unpacked into a fresh root
  (`dpkg -x`, no root rights needed), its launcher runs the scripted demo under the test run's
  virtual X server: exit 0 and a non-blank screenshot.
- The wheel: installed into a fresh venv beside napari (no Qt binding: the `[napari]` extra
  brings none), run from outside the checkout: `uda models`, `uda predict` on a shipped demo
  scan, the plugin's manifest validated by npe2 and its sample data opened through npe2.

Reuse what is already built (each is otherwise made here, in a temporary folder):
  UDA_DEB=path/to/uda-studio_X_amd64.deb   the .deb to test (skips the build)
  UDA_BUILD_PYTHON=venv/bin/python          the build venv (packaging/make_build_venv.sh)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"

pytestmark = pytest.mark.slow


def _run(cmd, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                            encoding="utf-8", errors="replace", timeout=timeout, **kwargs)
    assert result.returncode == 0, (f"{cmd[0]} exited {result.returncode}:\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def _clean_env(home: Path) -> dict:
    """The environment of an ordinary user: no PYTHONPATH into the checkout, own HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UDA_RESOURCES")}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if os.environ.get("UDA_DEB"):
        return Path(os.environ["UDA_DEB"])
    work = tmp_path_factory.mktemp("deb")
    python = os.environ.get("UDA_BUILD_PYTHON")
    if not python:
        python = _run([PACKAGING / "make_build_venv.sh", work / "venv"]).stdout.strip()
    out = _run([PACKAGING / "build_linux.sh", "--python", python, "--out", work / "build"],
               timeout=3600).stdout.strip().splitlines()[-1]
    return Path(out)


def test_deb_unpacked_into_a_fresh_root_runs_the_scripted_demo(deb, tmp_path):
    assert shutil.which("dpkg-deb"), "dpkg-deb is needed to unpack the package"
    root = tmp_path / "root"
    _run(["dpkg-deb", "-x", deb, root])
    fields = _run(["dpkg-deb", "-f", deb, "Package", "Depends"]).stdout
    assert "Package: uda-studio" in fields and "libc6" in fields
    launcher = root / "usr/bin/uda-studio"
    assert os.access(launcher, os.X_OK)
    assert (root / "usr/share/applications/uda-studio.desktop").is_file()
    assert (root / "usr/share/icons/hicolor/scalable/apps/uda-studio.svg").is_file()
    licences = root / "opt/uda-studio/licenses"
    assert (licences / "uda-studio/LICENSE").is_file()
    assert (licences / "uda-studio/TEMPLATE-NOTICE.txt").is_file()
    third_party = (licences / "THIRD-PARTY.txt").read_text(encoding="utf-8")
    assert "torch" in third_party and "napari" in third_party and "PySide6" in third_party
    home = tmp_path / "home"
    home.mkdir()
    shot = tmp_path / "shot.png"
    assert os.environ.get("DISPLAY"), "the test run's virtual X server (pytest-xvfb) is missing"
    result = _run([launcher, "--demo", "--method", "adabn", "--steps", "3",
                   "--out", tmp_path / "run", "--screenshot", shot, "--exit-when-done"],
                  timeout=900, env=_clean_env(home), cwd=tmp_path)
    assert "screenshot saved" in result.stdout
    image = np.asarray(Image.open(shot))
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image.std() > 10        # not a blank window
    assert (tmp_path / "run" / "adapted.pt").is_file()
    # the bundled command line, from the same installation
    models = _run([launcher, "uda", "models"], env=_clean_env(home), cwd=tmp_path).stdout
    assert "demo:brain-t1" in models and "not shipped" not in models


SAMPLES_THROUGH_NPE2 = """
import json, npe2
pm = npe2.PluginManager.instance()
pm.discover()
opened = {}
for sample in pm.get_manifest("uda-studio").contributions.sample_data:
    layers = sample.open()
    opened[sample.key] = [[kind, list(data.shape)] for data, _kwargs, kind in layers]
print(json.dumps(opened))
"""


def test_wheel_in_a_fresh_venv_beside_napari_runs_cli_and_sample_data(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO],
         cwd=tmp_path)
    for leftover in [REPO / "build", *REPO.glob("*.egg-info")]:
        shutil.rmtree(leftover, ignore_errors=True)
    (wheel,) = wheels.glob("uda_studio-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    bin_dir = venv / "bin"
    _run([bin_dir / "pip", "install", "-q", "torch==2.13.0", f"{wheel}[napari]", "npe2"],
         timeout=3600)
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home)
    models = _run([bin_dir / "uda", "models"], env=env, cwd=tmp_path).stdout
    assert "demo:brain-t1" in models and "not shipped" not in models
    scan = _run([bin_dir / "python", "-c", "from uda_core.io.resources import resources_dir;"
                 "print(resources_dir() / 'demo/t2/sub-100_t2.nii.gz')"],
                env=env, cwd=tmp_path).stdout.strip()
    assert "site-packages" in scan and Path(scan).is_file()
    _run([bin_dir / "uda", "predict", "--model", "demo:brain-t1", "--device", "cpu",
          "--out", tmp_path / "pred", scan], env=env, cwd=tmp_path, timeout=900)
    assert (tmp_path / "pred" / "sub-100_t2_seg.nii.gz").is_file()
    _run([bin_dir / "npe2", "validate", "uda-studio"], env=env, cwd=tmp_path)
    opened = json.loads(_run([bin_dir / "python", "-c", SAMPLES_THROUGH_NPE2], env=env,
                             cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert sorted(opened) == ["demo-flair", "demo-protocol", "demo-t1", "demo-t2"]
    for layers in opened.values():
        assert [kind for kind, _shape in layers] == ["image", "labels"]
        assert layers[0][1] == layers[1][1] and len(layers[0][1]) == 3
