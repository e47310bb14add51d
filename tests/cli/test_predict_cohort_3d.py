"""`uda predict` of a 3D network on a cohort: the same pipeline as 2D networks (worker
processes, summary CSV, --skip-existing, --num-parts), sliding windows in the main process."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_volume, make_seg_bundle_3d, write_nifti
from uda_core.cli import main

SHAPE = (20, 24, 10)


@pytest.fixture(scope="module")
def bundle_3d(tmp_path_factory) -> str:
    from uda_core.models.bundle import save_bundle
    return str(save_bundle(make_seg_bundle_3d(), tmp_path_factory.mktemp("b3d") / "tiny3d.pt"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _scans(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(write_nifti(folder / f"s{i}.nii.gz", blob_volume(SHAPE, seed=i)))
            for i in range(n)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_3d_cohort_with_a_worker_writes_a_summary_and_resumes(tmp_path, capsys, bundle_3d):
    scans = _scans(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.nii").write_text("not a NIfTI file")
    out = tmp_path / "out"
    args = ("predict", "--model", bundle_3d, "--out", out, "--device", "cpu", "--workers", "1",
            tmp_path / "in")
    code, _, err = run(capsys, *args)
    assert code == 1, err
    assert "3 written, 0 skipped, 1 failed" in err
    rows = {Path(r["file"]).name: r for r in _rows(out / "predict_summary.csv")}
    assert rows["broken.nii"]["status"] == "failed" and "broken.nii" in rows["broken.nii"][
        "reason"]
    for scan in scans:
        row = rows[scan.name]
        assert row["status"] == "written" and _labels(Path(row["mask"])).shape == SHAPE
        volumes = [float(row[f"{c}_ml"]) for c in ("background", "CSF", "GM", "WM")]
        # every voxel in one class (the CSV keeps 4 significant digits)
        assert abs(sum(volumes) - np.prod(SHAPE) * 8 / 1000) < 0.01
        assert 0 <= float(row["entropy"]) <= 1
        assert row["prior_kl"] == ""          # a 3D bundle's prior is of patches, not slices

    # the same mask as one file predicted on its own (no worker), with mirroring
    alone = tmp_path / "alone"
    assert run(capsys, "predict", "--model", bundle_3d, "--out", alone, "--device", "cpu",
               scans[1])[0] == 0
    np.testing.assert_array_equal(_labels(alone / "s1_seg.nii.gz"), _labels(out / "s1_seg.nii.gz"))
    assert not (alone / "predict_summary.csv").exists()
    # --no-mirroring reaches the sliding window: one pass instead of two gives other masks
    plain = tmp_path / "plain"
    assert run(capsys, "predict", "--model", bundle_3d, "--out", plain, "--device", "cpu",
               "--no-mirroring", "--workers", "0", scans[0], scans[1])[0] == 0
    assert any(not np.array_equal(_labels(plain / f"s{i}_seg.nii.gz"),
                                  _labels(out / f"s{i}_seg.nii.gz")) for i in (0, 1))

    # a killed run: the third mask missing; --skip-existing writes it and nothing else
    (out / "s2_seg.nii.gz").unlink()
    (tmp_path / "in" / "broken.nii").unlink()
    before = {i: os.stat(out / f"s{i}_seg.nii.gz") for i in (0, 1)}
    code, _, err = run(capsys, *args, "--skip-existing")
    assert code == 0, err
    assert "1 written, 2 skipped, 0 failed" in err
    for i in (0, 1):
        after = os.stat(out / f"s{i}_seg.nii.gz")
        assert (after.st_ino, after.st_mtime_ns) == (before[i].st_ino, before[i].st_mtime_ns)
    assert [r["status"] for r in _rows(out / "predict_summary.csv")] == [
        "skipped", "skipped", "written"]
    assert _labels(out / "s2_seg.nii.gz").shape == SHAPE


def test_3d_parts_write_every_mask_once(tmp_path, capsys, bundle_3d):
    scans = _scans(tmp_path / "in", 3)
    out = tmp_path / "out"
    done: list[str] = []
    for part in range(2):
        code, _, err = run(capsys, "predict", "--model", bundle_3d, "--out", out, "--device",
                           "cpu", "--workers", "0", "--num-parts", "2", "--part-id", part,
                           "--no-mirroring", tmp_path / "in")
        assert code == 0, err
        done += [Path(r["file"]).name
                 for r in _rows(out / f"predict_summary.part{part}-of-2.csv")]
    assert sorted(done) == sorted(s.name for s in scans) and len(done) == len(set(done))
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [f"s{i}_seg.nii.gz"
                                                                 for i in range(3)]
