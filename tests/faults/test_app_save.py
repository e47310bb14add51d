"""The app's Save on a full disk or a read-only folder: one dialog naming the folder and "no
space left" / "read-only", nothing partial left there, and the app stays usable: the next Save
into another folder works.

A full disk is simulated where the core writes (io.atomic's fsync of the finished temporary
raises ENOSPC, as a full disk does at the write or the flush) and, as root, made real with a
small filled tmpfs; a read-only folder is a read-only tmpfs mount as root (root writes
through chmod) or a chmod 0o555 folder otherwise. The registration panel's Save:
tests/app/registration/test_panel_registration.py."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from app.segmentation import save_box as save_module
from app.segmentation.panel import UdaPanel
from app.segmentation.save_box import SaveBox
from tests.faults.harness import inspect
from tests.faults.test_full_and_read_only import _fill, _mount
from uda_core.io import atomic


def _run_folder(tmp_path) -> dict:
    """A finished run's summary: two masks and a model file (random bytes: only copied)."""
    run = tmp_path / "run"
    (run / "masks").mkdir(parents=True)
    masks = []
    for k in range(2):
        masks.append(run / "masks" / f"sub-{k}_seg.nii.gz")
        masks[-1].write_bytes(os.urandom(4096))
    (run / "adapted.pt").write_bytes(os.urandom(8192))
    return {"masks": [str(m) for m in masks], "adapted_model": str(run / "adapted.pt")}


@pytest.fixture
def box(qtbot, tmp_path):
    widget = SaveBox()
    qtbot.addWidget(widget)
    widget.set_summary(_run_folder(tmp_path))
    return widget


@pytest.fixture
def panel(make_napari_viewer, tmp_path, monkeypatch):
    from app.segmentation import run_box
    monkeypatch.setattr(run_box, "SPEEDS_FILE", tmp_path / "speeds.json")
    widget = UdaPanel(make_napari_viewer())
    widget.save_box.set_summary(_run_folder(tmp_path))
    yield widget
    if widget._last_error_box is not None:
        widget._last_error_box.close()


def _disk_full_after(monkeypatch, good: int) -> None:
    """The core's atomic writes find the disk full after `good` complete files."""
    real, done = atomic._fsync, [0]

    def fsync(path, *, folder=False):
        if not folder:
            done[0] += 1
            if done[0] > good:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, folder=folder)
    monkeypatch.setattr(atomic, "_fsync", fsync)


def _save(box, monkeypatch, what: str, folder) -> list[str]:
    """Click Save `what` ("masks" or "model") choosing `folder`; returns the error lines the
    box gave (each one dialog in the panel)."""
    shown: list[str] = []
    box.failed.connect(shown.append)
    monkeypatch.setattr(save_module.QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(folder))
    monkeypatch.setattr(save_module.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(folder / "adapted.pt"), ""))
    button = box.masks_button if what == "masks" else box.model_button
    assert button.isEnabled()
    button.click()
    box.failed.disconnect(shown.append)
    return shown


def _one_line(shown: list[str], folder, words: str) -> None:
    assert len(shown) == 1, shown
    assert str(folder) in shown[0] and words in shown[0] and "another folder" in shown[0]
    assert "\n" not in shown[0] and "Traceback" not in shown[0]


def _still_usable(box, monkeypatch, tmp_path, what: str) -> None:
    """The next Save, into a good folder, writes everything."""
    other = tmp_path / f"other-{what}"
    other.mkdir()
    said: list[str] = []
    box.saved.connect(said.append)
    assert _save(box, monkeypatch, what, other) == []
    expected = ["adapted.pt"] if what == "model" else ["sub-0_seg.nii.gz", "sub-1_seg.nii.gz"]
    assert sorted(p.name for p in other.iterdir()) == expected
    assert said and str(other) in said[-1]


def test_the_panel_shows_one_dialog_and_stays_usable(panel, monkeypatch, tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    with monkeypatch.context() as patch:
        _disk_full_after(patch, 1)
        shown = _save(panel.save_box, patch, "masks", folder)
    _one_line(shown, folder, "no space left")
    dialog = panel._last_error_box
    assert dialog is not None and dialog.isVisible() and dialog.text() == shown[0]
    assert panel.run_box.status.text() == shown[0]
    dialog.close()
    assert list(folder.iterdir()) == []
    _still_usable(panel.save_box, monkeypatch, tmp_path, "masks")
    assert str(tmp_path / "other-masks") in panel.run_box.status.text()


@pytest.mark.parametrize("what, good", [("masks", 1), ("model", 0)])
def test_save_onto_a_full_disk_says_no_space_and_leaves_nothing(box, monkeypatch, tmp_path,
                                                                 what, good):
    folder = tmp_path / "full"
    folder.mkdir()
    with monkeypatch.context() as patch:
        _disk_full_after(patch, good)    # masks: the first copy lands, the second fails
        shown = _save(box, patch, what, folder)
    _one_line(shown, folder, "no space left")
    assert list(folder.iterdir()) == []   # the first mask removed again, no temporaries
    _still_usable(box, monkeypatch, tmp_path, what)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody here can write: a read-only tmpfs as root, else chmod 0o555."""
    if os.geteuid() == 0:
        folder = _mount(tmp_path / "ro", 64, read_only=True)   # skips where it cannot mount
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("what", ["masks", "model"])
def test_save_into_a_read_only_folder_says_so(box, monkeypatch, tmp_path, read_only_folder,
                                              what):
    shown = _save(box, monkeypatch, what, read_only_folder)
    words = "read-only" if os.geteuid() == 0 else "not writable"
    _one_line(shown, read_only_folder, words)
    assert list(read_only_folder.iterdir()) == []
    _still_usable(box, monkeypatch, tmp_path, what)


def test_masks_into_a_new_folder_on_a_read_only_disk_say_so(box, monkeypatch,
                                                            read_only_folder):
    folder = read_only_folder / "masks"
    shown = _save(box, monkeypatch, "masks", folder)
    _one_line(shown, folder, "read-only" if os.geteuid() == 0 else "not writable")
    assert not folder.exists()


def test_masks_onto_a_really_full_tmpfs(box, monkeypatch, tmp_path):
    disk = _mount(tmp_path / "tiny", 64)   # root only: skipped elsewhere, saying so
    try:
        _fill(disk)
        shown = _save(box, monkeypatch, "masks", disk)
        _one_line(shown, disk, "no space left")
        torn, temporaries = inspect(disk)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"] and not temporaries
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    _still_usable(box, monkeypatch, tmp_path, "masks")
