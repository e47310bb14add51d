"""uda_core.synth: label rule, contrasts, deformations, subjects and the demo data writer.

Most tests run on a small synthetic "head" (ellipsoids at 2 mm) passed as `template=`, so
they need neither nilearn nor resources/; one test uses the real template at 3 mm if present.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from uda_core.io.volume import Volume
from uda_core.synth import (
    CLASS_NAMES,
    DOMAINS,
    extract_template,
    load_template,
    make_subject,
    random_deformation,
    tissue_labels,
    write_demo_data,
)
from uda_core.synth.contrast import TISSUE_PROPERTIES, add_rician_noise, area_downsample
from uda_core.synth.template import NILEARN_FILES, TEMPLATE_FILES, default_template_dir


def _smoothstep(d):
    return np.clip(0.5 - d / 2.0, 0.0, 1.0)  # 1 inside (d < -1), 0 outside (d > 1), voxels


def phantom_template(voxel=2.0, shape=(40, 48, 40)) -> dict[str, Volume]:
    """Ellipsoid head: WM core, GM shell, CSF ventricles and rim; RAS, `voxel` mm."""
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    r = [(idx[a] - centre[a]) * voxel for a in range(3)]

    def ellipsoid(ax, ay, az, dx=0.0):
        rad = np.sqrt(((r[0] - dx) / ax) ** 2 + (r[1] / ay) ** 2 + (r[2] / az) ** 2)
        return _smoothstep((rad - 1.0) * min(ax, ay, az) / voxel)

    brain = ellipsoid(32, 40, 32)
    inner = ellipsoid(27, 35, 27)
    core = ellipsoid(22, 30, 22)
    ventricles = np.maximum(ellipsoid(4, 12, 5, dx=-7), ellipsoid(4, 12, 5, dx=7))
    wm = core * (1 - ventricles)
    gm = np.clip(inner - core, 0, 1) + 0.4 * np.clip(core - wm - ventricles, 0, 1)
    t1 = brain * (0.35 + 0.3 * gm + 0.5 * wm)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -centre * voxel
    return {
        name: Volume(data=np.clip(a, 0, 1).astype(np.float32), affine=affine)
        for name, a in (("t1", t1), ("gm", gm), ("wm", wm))
    }


@pytest.fixture(scope="module")
def phantom():
    return phantom_template()


@pytest.fixture(scope="module")
def subject(phantom):
    return make_subject(7, ("t1", "protocol", "t2", "pd"), spacing_mm=4.0, seed=3,
                        template=phantom)


def test_tissue_labels_rule():
    t1 = np.array([0.0, 0.01, 0.5, 0.5, 0.5, 0.5, 0.03])
    gm = np.array([0.9, 0.9, 0.2, 0.6, 0.1, 0.5, 0.3])
    wm = np.array([0.0, 0.0, 0.1, 0.3, 0.8, 0.0, 0.3])
    labels, p_csf = tissue_labels(t1, gm, wm)
    # outside the mask (t1 <= 0.02) label 0 and P_CSF 0 whatever GM/WM say
    assert labels.dtype == np.int16 and p_csf.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 1, 2, 3, 1, 1])  # ties -> lower label
    np.testing.assert_allclose(p_csf, [0, 0, 0.7, 0.1, 0.1, 0.5, 0.4], atol=1e-6)
    assert CLASS_NAMES == ("background", "CSF", "GM", "WM")


def test_signal_ordering_per_domain():
    csf, gm, wm = DOMAINS["t1"].tissue_signals()
    assert wm > gm > csf > 0
    p_csf, p_gm, p_wm = DOMAINS["protocol"].tissue_signals()
    assert p_wm > p_gm > p_csf > 0  # still T1-weighted ...
    assert p_gm / p_wm > gm / wm and p_csf / p_wm > csf / wm  # ... with weaker contrast
    csf, gm, wm = DOMAINS["t2"].tissue_signals()
    assert csf > gm > wm > 0
    csf, gm, wm = (abs(s) for s in DOMAINS["pd"].tissue_signals())
    assert gm > wm > 5 * csf  # FLAIR-like: CSF nulled, GM brighter than WM
    for tissue in ("csf", "gm", "wm"):
        assert TISSUE_PROPERTIES["3T"][tissue].t1_ms > TISSUE_PROPERTIES["1.5T"][tissue].t1_ms
    assert DOMAINS["protocol"].field_strength == "3T"
    assert DOMAINS["protocol"].noise_fraction > DOMAINS["t1"].noise_fraction
    assert max(DOMAINS["protocol"].resolution_mm) > max(DOMAINS["t1"].resolution_mm)


def test_image_contrast_per_label(subject):
    means = {}
    for name, (image, labels) in subject.items():
        means[name] = [float(image.data[labels.data == k].mean()) for k in range(4)]
    bg, csf, gm, wm = means["t1"]
    assert wm > gm > csf > bg
    bg, csf, gm, wm = means["protocol"]
    assert wm > gm > csf > bg
    bg, csf, gm, wm = means["t2"]
    assert csf > gm > wm > bg
    bg, csf, gm, wm = means["pd"]
    assert gm > wm > csf


def test_deformation_smooth_and_invertible():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -40.0
    shape = (40, 44, 40)
    deformation = random_deformation(affine, shape, np.random.default_rng(5))
    det = deformation.jacobian_determinant(affine, shape)
    assert det.min() > 0.3 and det.max() < 2.0
    phi = deformation.template_points(affine, shape)
    world = np.moveaxis(np.indices(shape) * 2.0 - 40.0, 0, -1)
    disp = np.linalg.norm(phi - world, axis=-1)
    assert 0.5 < disp.mean() < 12.0  # a few mm, not nothing, not wild
    step = np.linalg.norm(np.diff(phi, axis=0), axis=-1)  # 2 mm apart before the map
    assert step.min() > 1.0 and step.max() < 3.0


def test_same_anatomy_across_domains(subject):
    t1_img, t1_lab = subject["t1"]
    for name in ("t2", "pd"):
        img, lab = subject[name]
        np.testing.assert_array_equal(img.affine, t1_img.affine)
        np.testing.assert_array_equal(lab.data, t1_lab.data)
        assert img.shape == t1_img.shape and img.data.dtype == np.float32
        assert lab.data.dtype == np.int16
    assert set(np.unique(t1_lab.data)) == {0, 1, 2, 3}

    # "protocol": other array layout, same anatomy at the same world coordinates
    p_img, p_lab = subject["protocol"]
    assert p_img.orientation == DOMAINS["protocol"].orientation != "RAS"
    np.testing.assert_array_equal(p_img.affine, p_lab.affine)
    ijk = np.indices(p_lab.shape).reshape(3, -1)
    world = p_lab.affine[:3, :3] @ ijk + p_lab.affine[:3, 3:]
    t1_ijk = np.linalg.solve(t1_lab.affine[:3, :3], world - t1_lab.affine[:3, 3:])
    t1_ijk = np.rint(t1_ijk).astype(int)
    np.testing.assert_array_equal(p_lab.data.reshape(-1), t1_lab.data[tuple(t1_ijk)])


def test_determinism(phantom, subject):
    again = make_subject(7, ("t2", "t1"), spacing_mm=4.0, seed=3, template=phantom)
    for name in ("t1", "t2"):
        np.testing.assert_array_equal(again[name][0].data, subject[name][0].data)
        np.testing.assert_array_equal(again[name][1].data, subject[name][1].data)
    other_subject = make_subject(8, ("t1",), spacing_mm=4.0, seed=3, template=phantom)
    other_seed = make_subject(7, ("t1",), spacing_mm=4.0, seed=4, template=phantom)
    for other in (other_subject, other_seed):
        assert np.mean(other["t1"][1].data != subject["t1"][1].data) > 0.01


def test_labels_are_argmax_of_area_fractions():
    fractions = np.zeros((4, 2, 2, 2), np.float32)
    fractions[1] = 0.4
    fractions[2, 0] = 0.6  # half the block: GM 0.6, other half: CSF 0.4 + background 0.6
    fractions[0, 1] = 0.6
    mean = area_downsample(fractions, 2)
    np.testing.assert_allclose(mean[:, 0, 0, 0], [0.3, 0.4, 0.3, 0.0])
    assert np.argmax(mean[:, 0, 0, 0]) == 1  # CSF, the largest share


def test_rician_noise_background():
    rng = np.random.default_rng(0)
    noisy = add_rician_noise(np.zeros(20000, np.float32), 2.0, rng)
    assert noisy.min() >= 0
    assert abs(noisy.mean() - 2.0 * np.sqrt(np.pi / 2)) < 0.1  # Rayleigh mean


def test_write_demo_data_layout(tmp_path, phantom, subject):
    manifest = write_demo_data(tmp_path, subjects=[7], spacing_mm=4.0, seed=3, progress=False,
                               template=phantom, heads=False)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["classes"] == list(CLASS_NAMES)
    assert manifest["seed"] == 3 and manifest["spacing_mm"] == 4.0
    assert set(manifest["domains"]) == {"t1", "protocol", "t2", "pd"}
    assert [s["id"] for s in manifest["subjects"]] == ["sub-007"]
    for name in ("t1", "protocol", "t2", "pd"):
        entry = manifest["subjects"][0]["files"][name]
        assert entry["image"] == f"{name}/sub-007_{name}.nii.gz"
        assert entry["labels"] == f"{name}/sub-007_labels.nii.gz"
        img = nib.load(str(tmp_path / entry["image"]))
        lab = nib.load(str(tmp_path / entry["labels"]))
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        expected_img, expected_lab = subject[name]
        np.testing.assert_allclose(img.affine, expected_img.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(lab.dataobj), expected_lab.data)
        slope = float(img.dataobj.slope)
        np.testing.assert_allclose(img.get_fdata(), expected_img.data, atol=slope * 0.51)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left
    # byte-identical when regenerated (deterministic simulation and gzip stream)
    write_demo_data(tmp_path / "again", subjects=[7], domains=("t2",), spacing_mm=4.0, seed=3,
                    progress=False, template=phantom, heads=False)
    for rel in ("t2/sub-007_t2.nii.gz", "t2/sub-007_labels.nii.gz"):
        assert (tmp_path / "again" / rel).read_bytes() == (tmp_path / rel).read_bytes()


def test_non_integer_spacing_ratio(phantom):
    out = make_subject(2, ("t1", "protocol"), spacing_mm=3.0, seed=0, template=phantom)
    (img, lab), (_, p_lab) = out["t1"], out["protocol"]
    assert img.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert img.shape == lab.shape and sorted(p_lab.shape) == sorted(lab.shape)
    assert set(np.unique(lab.data)) == {0, 1, 2, 3}
    assert np.bincount(lab.data.ravel()).tolist() == np.bincount(p_lab.data.ravel()).tolist()


def test_extract_and_load_template(tmp_path):
    source = tmp_path / "nilearn"
    source.mkdir()
    affine = np.array([[1, 0, 0, -20], [0, 1, 0, -25], [0, 0, 1, -3], [0, 0, 0, 1]], float)
    maps = {n: np.zeros((40, 50, 30), np.uint8) for n in ("t1", "gm", "wm")}
    maps["t1"][10:30, 12:40, 1:20] = 200  # brain touches the bottom of the field of view
    maps["gm"][10:30, 12:40, 1:20] = 100
    maps["wm"][15:25, 20:30, 5:15] = 150
    for name, data in maps.items():
        nib.save(nib.Nifti1Image(data, affine), str(source / NILEARN_FILES[name]))
    written = extract_template(tmp_path / "out", source_dir=source, margin_mm=4.0)
    assert "McConnell Brain Imaging Centre" in written["notice"].read_text()
    template = load_template(tmp_path / "out")
    t1 = template["t1"]
    assert t1.data.dtype == np.float32 and t1.shape == (28, 36, 27)
    assert nib.load(str(tmp_path / "out" / TEMPLATE_FILES["t1"])).get_data_dtype() == np.uint8
    # same world position of the brain's first voxel before and after cropping
    np.testing.assert_allclose(t1.affine @ [4, 4, 4, 1], affine @ [10, 12, 1, 1])
    assert t1.data[4, 4, 4] == pytest.approx(200 / 255)
    assert t1.data[:, :, :3].max() == 0  # zero padding beyond the source field of view


def test_real_template_low_resolution():
    folder = default_template_dir()
    if not (folder / TEMPLATE_FILES["t1"]).is_file():
        pytest.skip("resources/template not generated")
    full = load_template(folder)
    small = {}
    for name, vol in full.items():
        data = area_downsample(vol.data, 3)
        affine = vol.affine @ np.diag([3.0, 3.0, 3.0, 1.0])
        affine[:3, 3] = vol.affine[:3, :3] @ [1, 1, 1] + vol.affine[:3, 3]
        small[name] = Volume(data=data, affine=affine)
    out = make_subject(1, ("t1", "t2"), spacing_mm=6.0, seed=0, template=small)
    (t1, lab), (t2, lab2) = out["t1"], out["t2"]
    np.testing.assert_array_equal(lab.data, lab2.data)
    m1 = [t1.data[lab.data == k].mean() for k in range(4)]
    m2 = [t2.data[lab.data == k].mean() for k in range(4)]
    assert m1[3] > m1[2] > m1[1] > m1[0]
    assert m2[1] > m2[2] > m2[3] > m2[0]
