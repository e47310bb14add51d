"""uda_core.io.atomic.atomic_output and the writers built on it: new files get 0o666 & ~umask
(not mkstemp's 0600), no temporary file is ever left behind, and existing files are only
replaced when asked."""

from __future__ import annotations

import os
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from uda_core.errors import InputError, ModelError
from uda_core.io import atomic
from uda_core.io.atomic import NEW_FILE_MODE, atomic_output


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_new_file_mode_is_the_umask_default():
    assert NEW_FILE_MODE == 0o666 & ~_umask()


def test_read_umask_follows_the_process_umask():
    old = os.umask(0o027)
    try:
        assert atomic._read_umask() == 0o027
    finally:
        os.umask(old)


def test_writes_a_new_file_with_normal_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target, overwrite=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.exists()
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert _mode(target) == 0o666 & ~_umask()
    assert _names(tmp_path) == ["out.bin"]


def test_temporary_keeps_the_double_suffix(tmp_path):
    with atomic_output(tmp_path / "scan.nii.gz", overwrite=False) as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    with atomic_output(tmp_path / "run.json", overwrite=False) as tmp:
        assert tmp.suffix == ".json"
        tmp.write_text("{}")


def test_error_in_the_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.bin", overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_error_in_the_block_keeps_the_existing_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_without_overwrite_an_existing_file_is_refused_and_untouched(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError), atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"new")  # pragma: no cover - refused on entry
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_without_overwrite_a_file_appearing_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(ValueError, match="taken"), atomic_output(
            target, overwrite=False, exists_error=lambda p: ValueError(f"{p.name} taken")) as tmp:
        tmp.write_bytes(b"new")
        target.write_bytes(b"other")  # another writer wins the race
    assert target.read_bytes() == b"other"
    assert _names(tmp_path) == ["out.bin"]


def test_without_hard_links_the_check_then_rename_fallback_works(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(atomic.os, "link", no_link)
    target = tmp_path / "out.bin"
    with atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(FileExistsError), atomic_output(target, overwrite=False) as tmp:
        pass  # pragma: no cover - refused on entry
    assert _names(tmp_path) == ["out.bin"]


def test_overwrite_replaces_and_gives_normal_permissions(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o666 & ~_umask()
    assert _names(tmp_path) == ["out.bin"]


# ------------------------------------------------ the writers that use it


def test_saved_bundle_has_normal_permissions(tiny_bundle_path, tmp_path):
    assert _mode(tiny_bundle_path) == 0o666 & ~_umask()
    assert _names(tmp_path) == ["tiny.pt"]


def test_save_bundle_refusal_keeps_its_message(tiny_bundle_path):
    from uda_core.models.bundle import load_model, save_bundle

    before = open(tiny_bundle_path, "rb").read()
    with pytest.raises(ModelError, match="already exists; refusing to overwrite it"):
        save_bundle(load_model(tiny_bundle_path), tiny_bundle_path)
    assert open(tiny_bundle_path, "rb").read() == before


def test_checkpoint_json_and_nifti_writers_give_normal_permissions(tmp_path):
    from uda_core.engine.checkpoints import load_checkpoint, save_checkpoint
    from uda_core.exports.json_file import write_json_atomic
    from uda_core.io.volume import Volume
    from uda_core.io.writers import write_volume
    from uda_core.synth.template import write_nifti_atomic

    checkpoint = save_checkpoint(tmp_path / "ckpt" / "last.pt", {"step": torch.tensor(3)})
    assert int(load_checkpoint(checkpoint)["step"]) == 3
    write_json_atomic(tmp_path / "run.json", {"a": np.float32(1.5)})
    image = nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), np.eye(4))
    template = write_nifti_atomic(image, tmp_path / "t.nii.gz")
    volume = write_volume(Volume(np.ones((3, 4, 5), np.float32), np.eye(4)),
                          tmp_path / "v.nii.gz")
    for path in (checkpoint, tmp_path / "run.json", template, volume):
        assert _mode(path) == 0o666 & ~_umask(), path
    assert _names(tmp_path) == ["ckpt", "run.json", "t.nii.gz", "v.nii.gz"]
    assert _names(tmp_path / "ckpt") == ["last.pt"]
    again = write_nifti_atomic(image, tmp_path / "ckpt" / "t.nii.gz")
    assert again.read_bytes() == template.read_bytes()  # deterministic gzip bytes


def test_write_volume_refusals_keep_their_messages(tmp_path):
    from uda_core.io.volume import Volume
    from uda_core.io.writers import write_volume

    target = tmp_path / "v.nii.gz"
    target.write_bytes(b"old")
    volume = Volume(np.ones((3, 4, 5), np.float32), np.eye(4), source=str(tmp_path / "in.nii"))
    with pytest.raises(InputError, match="already exists; refusing to overwrite it"):
        write_volume(volume, target)
    with pytest.raises(InputError, match="is an input of this run"):
        write_volume(volume, tmp_path / "in.nii", overwrite=True)
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["v.nii.gz"]


def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "out.json"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("{}")
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert ".out.json." in calls[0][1] and calls[1][1] == str(target)
    assert calls[2][1] == str(tmp_path)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / ".adapted.pt.0123456789ab.tmp.pt",
             tmp_path / "checkpoints" / ".last.pt.ba9876543210.tmp.pt"]
    kept = [tmp_path / "adapted.pt", tmp_path / ".hidden", tmp_path / ".x.0123.tmp.pt",
            tmp_path / "checkpoints" / "last.pt"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(atomic.remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


def test_a_full_disk_during_the_write_is_one_line_naming_the_folder(tmp_path):
    import errno
    with pytest.raises(atomic.OutputError) as excinfo, \
            atomic_output(tmp_path / "out.bin", overwrite=True):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(excinfo.value) == f"{tmp_path}: cannot write there: no space left on the device"
    assert _names(tmp_path) == []
