"""A full disk and a read-only folder as --out: one error line naming the folder and saying
"no space left" / "read-only", no traceback, nothing partial left, the inputs untouched.

The small file systems are tmpfs mounts, which need root (and a kernel that lets this
container mount): without them these tests are skipped, saying so."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.conftest import blob_volume, write_nifti
from tests.faults.harness import inspect
from uda_core.cli import main


def _mount(folder, size_kib: int, read_only: bool = False):
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return folder


@pytest.fixture
def small_disk(tmp_path):
    folder = _mount(tmp_path / "small", 160)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path):
    folder = _mount(tmp_path / "ro", 64, read_only=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _digest(paths) -> list[str]:
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith(f"uda {command}:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def inputs(tmp_path, tiny_bundle_path):
    scans = [write_nifti(tmp_path / f"scan{k}.nii.gz", blob_volume(seed=k)) for k in range(2)]
    return tiny_bundle_path, scans, _digest([tiny_bundle_path, *scans])


def _adapt(model, out, scans):
    return main(["adapt", "--model", model, "--method", "tent", "--out", str(out),
                 "--steps", "4", "--batch-size", "2", "--device", "cpu", *scans])


def test_adapt_onto_a_full_disk_says_no_space_and_leaves_only_complete_files(
        small_disk, inputs, capsys):
    model, scans, before = inputs
    out = small_disk / "run"
    assert _adapt(model, out, scans) == 1
    line = _error_line(capsys, "adapt")
    assert str(out) in line and "no space left" in line, line
    torn, temporaries = inspect(out)
    assert torn == [] and temporaries == []
    assert not (out / "adapted.pt").exists()
    assert _digest([model, *scans]) == before


def test_predict_onto_a_full_disk_says_no_space(tmp_path, inputs, capsys):
    model, scans, before = inputs
    disk = _mount(tmp_path / "tiny", 64)
    try:
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)   # fill it to the brim
        try:
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        code = main(["predict", "--model", model, "--out", str(disk), "--device", "cpu",
                     *scans])
        assert code == 1
        line = _error_line(capsys, "predict")
        assert str(disk) in line and "no space left" in line, line
        torn, temporaries = inspect(disk)
        assert torn == [] and temporaries == []
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert _digest([model, *scans]) == before


@pytest.mark.parametrize("where", ["the folder itself", "a new folder inside"])
def test_adapt_and_predict_into_a_read_only_place_say_so(read_only, inputs, capsys, where):
    model, scans, before = inputs
    out = read_only if where == "the folder itself" else read_only / "run"
    assert _adapt(model, out, scans) == 1
    line = _error_line(capsys, "adapt")
    assert str(out) in line and "read-only" in line, line
    code = main(["predict", "--model", model, "--out", str(out), "--device", "cpu", *scans])
    assert code == 1
    line = _error_line(capsys, "predict")
    assert str(out) in line and "read-only" in line, line
    assert list(read_only.iterdir()) == []
    assert _digest([model, *scans]) == before
