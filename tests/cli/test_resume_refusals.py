"""`uda adapt --resume` refuses a torn or foreign checkpoint in one line naming it."""

from __future__ import annotations

import pytest

from tests.conftest import blob_volume, make_seg_bundle, write_nifti
from uda_core.cli import main
from uda_core.models.bundle import save_bundle


@pytest.fixture
def finished_run(tmp_path, tiny_bundle_path):
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    out = tmp_path / "run"
    argv = ["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out", str(out),
            "--steps", "3", "--batch-size", "2", "--device", "cpu", "--no-masks", target]
    assert main(argv) == 0
    return argv, out / "checkpoints" / "last.pt"


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert all(w in err[0] for w in words), err[0]


def test_a_truncated_checkpoint_is_refused(finished_run, capsys):
    argv, last = finished_run
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    capsys.readouterr()
    assert main([*argv, "--resume", str(last)]) == 1
    _one_error_line(capsys, "last.pt", "not a readable")


def test_a_checkpoint_of_another_method_is_refused(finished_run, capsys):
    argv, last = finished_run
    argv = [a if a != "tent" else "adabn" for a in argv]
    capsys.readouterr()
    assert main([*argv, "--resume", str(last)]) == 1
    _one_error_line(capsys, "last.pt", "method 'tent'", "'adabn'")


def test_a_checkpoint_of_another_network_is_refused(finished_run, capsys, tmp_path):
    argv, last = finished_run
    other = str(save_bundle(make_seg_bundle(base_channels=6), tmp_path / "other.pt"))
    argv = [other if a.endswith(".pt") else a for a in argv]
    capsys.readouterr()
    assert main([*argv, "--resume", str(last)]) == 1
    _one_error_line(capsys, "last.pt", "another network")


def test_any_other_file_is_refused(finished_run, capsys, tmp_path):
    argv, _ = finished_run
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    capsys.readouterr()
    assert main([*argv, "--resume", str(junk)]) == 1
    _one_error_line(capsys, "junk.pt")


def test_a_checkpoint_of_another_run_is_refused(finished_run, capsys, tmp_path):
    """Same method and model, other data: its last.pt belongs to another run."""
    argv, last = finished_run
    other = write_nifti(tmp_path / "other.nii.gz", blob_volume(seed=5))
    argv = [*argv[:-1], other]
    capsys.readouterr()
    assert main([*argv, "--resume", str(last)]) == 1
    _one_error_line(capsys, "last.pt", "belongs to another run", "data")


def test_other_settings_are_another_run_but_more_steps_are_not(finished_run, capsys):
    argv, last = finished_run
    capsys.readouterr()
    assert main([*argv, "--seed", "7", "--resume", str(last)]) == 1
    _one_error_line(capsys, "last.pt", "belongs to another run", "engine settings")
    longer = [("5" if a == "3" else a) for a in argv]   # --steps 3 -> 5
    assert main([*longer, "--resume", str(last)]) == 0, capsys.readouterr().err


def test_a_missing_checkpoint_says_how_to_go_on(finished_run, capsys, tmp_path):
    argv, _ = finished_run
    capsys.readouterr()
    assert main([*argv, "--resume", str(tmp_path / "none" / "last.pt")]) == 1
    _one_error_line(capsys, "last.pt", "checkpoint not found", "without --resume")
