"""Two runs, one folder: the second is refused while the first lives; a killed run leaves no
stuck lock (the operating system drops it)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main
from uda_core.errors import UdaError
from uda_core.io.folder_lock import hold_folder

HOLD = """
import sys, time
from uda_core.io.folder_lock import hold_folder
with hold_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_and_the_folder_stays_clean(tmp_path):
    with hold_folder(tmp_path / "out"):
        with pytest.raises(UdaError, match="another UDA Studio run"), \
                hold_folder(tmp_path / "out"):
            pass
    with hold_folder(tmp_path / "out"):   # released: free again
        pass
    assert not any((tmp_path / "out").iterdir())


def test_predict_and_adapt_into_a_held_folder_are_refused_until_its_holder_is_killed(
        tmp_path, capsys, tiny_bundle_path):
    scan = write_nifti(tmp_path / "scan.nii.gz", blob_volume())
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        assert main(["predict", "--model", tiny_bundle_path, "--out", str(out), scan]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another UDA Studio run" in err[0] and str(out) in err[0]
        assert main(["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out",
                     str(out), "--steps", "1", "--batch-size", "2", "--device", "cpu",
                     "--no-masks", scan]) == 1
        assert "another UDA Studio run" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    deadline = time.time() + 10
    while True:   # the kernel drops the lock with the process
        code = main(["predict", "--model", tiny_bundle_path, "--out", str(out), scan])
        if code == 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert code == 0, capsys.readouterr().err
    assert (out / "scan_seg.nii.gz").is_file()


def test_taking_the_folder_clears_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    left = out / "masks" / ".a_seg.nii.gz.0123456789ab.tmp.nii.gz"
    left.write_bytes(b"half a mask")
    (out / "masks" / "a_seg.nii.gz").write_bytes(b"kept")
    with hold_folder(out):
        assert not left.exists()
    assert [p.name for p in (out / "masks").iterdir()] == ["a_seg.nii.gz"]
