"""Expanding a cohort's inputs (files, folders, DICOM series, globs, lists) and sharding it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.errors import InputError, UdaError
from uda_core.io.cohort import expand_inputs, shard


def _cohort(root: Path) -> dict[str, Path]:
    (root / "a" / "deep").mkdir(parents=True)
    (root / "dicom" / "series1").mkdir(parents=True)
    data = blob_volume((8, 8, 4))
    made = {name: Path(write_nifti(root / rel, data)) for name, rel in {
        "x": "x.nii.gz", "y": "a/y.nii", "z": "a/deep/z.nii.gz",
        "labels": "a/sub-1_labels.nii.gz"}.items()}
    (root / "dicom" / "series1" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 8)
    (root / "a" / ".z_seg.nii.gz.0123.tmp.nii.gz").write_bytes(b"")   # a half-written temp
    (root / "notes.md").write_text("not a volume")
    made["series"] = root / "dicom" / "series1"
    return made


def test_a_folder_is_searched_recursively_with_dicom_series_as_one_input(tmp_path):
    made = _cohort(tmp_path)
    found = expand_inputs([tmp_path])
    # a folder's files, then its subfolders, each in name order
    assert found == [made["x"], made["y"], made["z"], made["series"]]
    # label maps, temporaries and other files are not inputs; the output folder is left out
    assert expand_inputs([tmp_path], exclude=[tmp_path / "a"]) == [made["x"], made["series"]]


def test_globs_lists_and_duplicates(tmp_path):
    made = _cohort(tmp_path)
    assert expand_inputs([str(tmp_path / "**" / "*.nii*")]) == [made["z"], made["y"],
                                                               made["x"]]  # sorted matches
    listing = tmp_path / "cohort.csv"
    listing.write_text("subject,file\n1,x.nii.gz\n2,a\n3,x.nii.gz\n")
    assert expand_inputs([listing]) == [made["x"], made["y"], made["z"]]
    text = tmp_path / "cohort.txt"
    text.write_text(f"# two scans\n{made['z']}\n\ndicom/series1\n")
    assert expand_inputs([text, made["z"]]) == [made["z"], made["series"]]


@pytest.mark.parametrize("entry, problem", [("missing.nii.gz", "does not exist"),
                                            ("none_*.nii.gz", "matches no file"),
                                            ("empty", "holds no volumes")])
def test_what_finds_nothing_is_one_clear_error(tmp_path, entry, problem):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=problem) as caught:
        expand_inputs([tmp_path / entry])
    assert entry in str(caught.value)


def test_sharding_covers_every_input_exactly_once():
    inputs = [Path(f"s{i:03d}.nii.gz") for i in range(23)]
    for num_parts in (1, 2, 3, 5, 23, 30):
        parts = [shard(inputs, num_parts, k) for k in range(num_parts)]
        together = [p for part in parts for p in part]
        assert sorted(together) == inputs and len(together) == len(set(together))
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        assert parts == [shard(list(inputs), num_parts, k) for k in range(num_parts)]
    with pytest.raises(UdaError, match="--part-id"):
        shard(inputs, 3, 3)
    with pytest.raises(UdaError, match="--num-parts"):
        shard(inputs, 0, 0)
    assert np.array_equal(shard(inputs, 4, 1), inputs[1::4])
