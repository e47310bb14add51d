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


def _fill(disk):
    """Fill a small file system to the brim with one file, 'filler'."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 1024):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


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
        _fill(disk)
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


# `uda reg adapt`, `uda reg apply`, `uda train-source`: the same promises

@pytest.fixture
def reg_inputs(tmp_path, tiny_reg_model):
    scans = [write_nifti(tmp_path / f"reg{k}.nii.gz", blob_volume(seed=k)) for k in range(2)]
    return tiny_reg_model, scans, _digest([tiny_reg_model, *scans])


@pytest.fixture
def labelled(tmp_path):
    from tests.runs.test_train_source import _brain

    data = tmp_path / "data"
    files = [p for k in (1, 2) for p in _brain(data, f"sub-{k}", k)]
    return data, _digest(files), files


def _reg_adapt(model, out, scans):
    return main(["reg", "adapt", "--model", model, "--discrepancy", "l1", "--out", str(out),
                 "--fixed", scans[0], "--moving", scans[1], "--steps", "2", "--device", "cpu"])


def _reg_apply(model, out, scans):
    return main(["reg", "apply", "--model", model, "--fixed", scans[0], "--moving", scans[1],
                 "--out", str(out), "--device", "cpu"])


def _train(out, data):
    return main(["train-source", "--out", str(out), "--epochs", "1", "--head-epochs", "0",
                 "--batch-size", "8", "--device", "cpu", str(data)])


@pytest.mark.parametrize("command", ["reg adapt", "reg apply"])
def test_reg_onto_a_full_disk_says_no_space(small_disk, reg_inputs, capsys, command):
    model, scans, before = reg_inputs
    _fill(small_disk)
    out = small_disk / "run"
    run = _reg_adapt if command == "reg adapt" else _reg_apply
    assert run(model, out, scans) == 1
    line = _error_line(capsys, "reg")
    assert str(out) in line and "no space left" in line, line
    torn, temporaries = inspect(small_disk)
    assert torn == [] and temporaries == []
    assert not out.exists() or not any(out.rglob("*.nii.gz")) and not any(out.rglob("*.pt"))
    assert _digest([model, *scans]) == before


def test_train_source_onto_a_full_disk_says_no_space(small_disk, labelled, capsys):
    data, before, files = labelled
    _fill(small_disk)
    out = small_disk / "m.pt"
    assert _train(out, data) == 1
    line = _error_line(capsys, "train-source")
    assert str(small_disk) in line and "no space left" in line, line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    assert _digest(files) == before


@pytest.mark.parametrize("where", ["the folder itself", "a new folder inside"])
def test_reg_and_train_source_into_a_read_only_place_say_so(read_only, reg_inputs, labelled,
                                                             capsys, where, monkeypatch):
    def no_work(*args, **kwargs):   # a read-only place is refused before the work
        raise AssertionError("the work started")
    monkeypatch.setattr("uda_core.runs.register.register_volumes", no_work)
    monkeypatch.setattr("uda_core.runs.train_segmentation.train_source_model", no_work)
    model, scans, before = reg_inputs
    out = read_only if where == "the folder itself" else read_only / "run"
    for command, run in (("adapt", _reg_adapt), ("apply", _reg_apply)):
        assert run(model, out, scans) == 1
        line = _error_line(capsys, "reg")
        assert str(out) in line and "read-only" in line, (command, line)
    data, data_before, files = labelled   # --out is a file; its folder must exist
    assert _train(read_only / "m.pt", data) == 1
    line = _error_line(capsys, "train-source")
    assert str(read_only) in line and "read-only" in line, line
    assert list(read_only.iterdir()) == []
    assert _digest([model, *scans]) == before and _digest(files) == data_before
