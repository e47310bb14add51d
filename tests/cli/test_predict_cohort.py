"""`uda predict` on a cohort: worker processes, the summary table, failures that never stop
the others, --skip-existing after a killed run, and --num-parts/--part-id."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _scans(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(write_nifti(folder / f"s{i}.nii.gz", blob_volume((20, 24, 10), seed=i)))
            for i in range(n)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_a_failing_file_is_a_summary_row_and_the_others_are_written(tmp_path, capsys,
                                                                    tiny_bundle_path):
    scans = _scans(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.nii").write_text("not a NIfTI file")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out", out,
                            "--device", "cpu", "--workers", "1", tmp_path / "in")
    assert code == 1, err                       # the exit status counts the failures
    assert "broken.nii" in err and "3 written, 0 skipped, 1 failed" in err
    rows = {Path(r["file"]).name: r for r in _rows(out / "predict_summary.csv")}
    assert rows["broken.nii"]["status"] == "failed" and rows["broken.nii"]["mask"] == ""
    assert "broken.nii" in rows["broken.nii"]["reason"]
    for scan in scans:
        row = rows[scan.name]
        assert row["status"] == "written" and Path(row["mask"]).is_file()
        volumes = [float(row[f"{c}_ml"]) for c in ("background", "CSF", "GM", "WM")]
        # every voxel is in one class: the class volumes add up to the scan's volume (2 mm)
        assert abs(sum(volumes) - 20 * 24 * 10 * 8 / 1000) < 1e-3
        assert 0 <= float(row["entropy"]) <= 1 and float(row["seconds"]) > 0
    assert not any(p.name.startswith(".") for p in out.iterdir())   # no temporaries left


def test_workers_give_the_masks_of_one_process(tmp_path, capsys, tiny_bundle_path):
    _scans(tmp_path / "in", 3)
    for workers in (0, 2):
        code, _, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out",
                           tmp_path / f"w{workers}", "--device", "cpu", "--workers", workers,
                           tmp_path / "in")
        assert code == 0, err
    for i in range(3):
        np.testing.assert_array_equal(_labels(tmp_path / "w0" / f"s{i}_seg.nii.gz"),
                                      _labels(tmp_path / "w2" / f"s{i}_seg.nii.gz"))


def test_skip_existing_after_a_killed_run_finishes_the_rest_and_rewrites_nothing(
        tmp_path, capsys, tiny_bundle_path):
    _scans(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = ("predict", "--model", tiny_bundle_path, "--out", out, "--device", "cpu",
            "--workers", "0", tmp_path / "in")
    assert run(capsys, *args)[0] == 0
    # what a run killed after two masks leaves: two complete masks (written atomically), a
    # hidden temporary of the third, nothing for the fourth
    for i in (2, 3):
        (out / f"s{i}_seg.nii.gz").unlink()
    (out / ".s2_seg.nii.gz.0123abcd.tmp.nii.gz").write_bytes(b"\x1f\x8b half")
    before = {i: os.stat(out / f"s{i}_seg.nii.gz") for i in (0, 1)}
    code, _, err = run(capsys, *args)
    assert code == 1 and "already exists" in err and "--skip-existing" in err
    code, _, err = run(capsys, *args, "--skip-existing")
    assert code == 0, err
    assert "2 written, 2 skipped, 0 failed" in err
    for i in (0, 1):
        after = os.stat(out / f"s{i}_seg.nii.gz")
        assert (after.st_ino, after.st_mtime_ns) == (before[i].st_ino, before[i].st_mtime_ns)
    statuses = [r["status"] for r in _rows(out / "predict_summary.csv")]
    assert statuses == ["skipped", "skipped", "written", "written"]
    assert _labels(out / "s2_seg.nii.gz").shape == (20, 24, 10)


def test_parts_write_every_mask_once_with_a_summary_each(tmp_path, capsys, tiny_bundle_path):
    scans = _scans(tmp_path / "in", 5)
    listing = tmp_path / "cohort.txt"
    listing.write_text("\n".join(str(s) for s in scans) + "\n")
    out = tmp_path / "out"
    done: list[str] = []
    for part in range(2):
        code, _, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out", out,
                           "--device", "cpu", "--workers", "0", "--num-parts", "2",
                           "--part-id", part, listing)
        assert code == 0, err
        done += [Path(r["file"]).name
                 for r in _rows(out / f"predict_summary.part{part}-of-2.csv")]
    assert sorted(done) == sorted(s.name for s in scans) and len(done) == len(set(done))
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [f"s{i}_seg.nii.gz"
                                                                 for i in range(5)]


def test_standardise_says_whether_it_matched_and_always_forces_it(tmp_path, capsys):
    from tests.conftest import make_seg_bundle
    from uda_core.models.bundle import save_bundle

    model = save_bundle(make_seg_bundle(intensity_reference={
        "percentiles": [1.0, 50.0, 99.0], "values": [-1.5, 0.0, 1.5]}), tmp_path / "m.pt")
    scans = _scans(tmp_path / "in", 2)
    code, _, err = run(capsys, "predict", "--model", model, "--out", tmp_path / "auto",
                       "--device", "cpu", "--workers", "0", "--standardise", *scans)
    assert code == 0, err
    assert "uda predict: intensities " in err and "on 2 target(s)" in err
    code, _, err = run(capsys, "predict", "--model", model, "--out", tmp_path / "on",
                       "--device", "cpu", "--workers", "0", "--standardise-always", *scans)
    assert code == 0 and "uda predict: intensities" not in err
