"""Complex-valued (and RGB) images are refused with their voxel type named, never read with
their imaginary part dropped."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from uda_core.cli import main
from uda_core.errors import InputError
from uda_core.io.readers import read_volume


def test_complex_nifti_is_refused_with_its_type(tmp_path):
    data = (np.ones((6, 7, 8)) + 1j * np.ones((6, 7, 8))).astype(np.complex64)
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.raises(InputError, match="complex-valued voxels.*complex64") as info:
        read_volume(path)
    assert "complex.nii.gz" in str(info.value)


def test_complex_mha_is_refused(tmp_path):
    """MetaImage stores a complex image as two channels per voxel: refused as such."""
    image = sitk.GetImageFromArray((np.ones((5, 6, 7)) * (1 + 2j)).astype(np.complex64))
    path = tmp_path / "complex.mha"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="complex-valued voxels|2 values per voxel"):
        read_volume(path)


def test_rgb_nifti_is_refused(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(InputError, match="not one real value"):
        read_volume(path)


def test_uda_predict_names_the_complex_file_in_one_line(tmp_path, capsys, tiny_bundle_path):
    data = np.ones((6, 7, 8), dtype=np.complex64)
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    code = main(["predict", "--model", tiny_bundle_path, "--out", str(tmp_path / "o"),
                 str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "c.nii.gz" in err[0] and "complex" in err[0]


def test_a_lying_voxel_size_is_refused(tmp_path):
    """Found by the header fuzzer: srow_z2 = 3.4e38 made resampling build an absurd grid."""
    import nibabel as nib
    import numpy as np

    from uda_core.errors import InputError
    from uda_core.io.readers import read_volume
    path = tmp_path / "lying.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32),
                             np.diag([2.0, 2.0, 3.4e38, 1.0])), str(path))
    with pytest.raises(InputError, match="implausible voxel size"):
        read_volume(path)


def test_an_overflowing_scale_is_refused_without_warnings(tmp_path, recwarn):
    import nibabel as nib
    import numpy as np

    from uda_core.errors import InputError
    from uda_core.io.readers import read_volume
    path = tmp_path / "scaled.nii"
    image = nib.Nifti1Image(np.full((8, 8, 8), 100, np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_slope_inter(3.4e38, 0)
    nib.save(image, str(path))
    with pytest.raises(InputError, match="non-finite voxels"):
        read_volume(path)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_an_empty_element_data_file_is_one_plain_line(tmp_path):
    """Found by the header fuzzer: `ElementDataFile = ` (empty) made the voxels' bytes the
    file name, and the error line carried them (newlines included)."""
    import numpy as np
    path = tmp_path / "empty.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"ElementDataFile = LOCAL", b"ElementDataFile = "))
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    message = str(excinfo.value)
    assert message.isprintable() and str(path) in message
