"""Shared fixtures: tiny volumes and tiny model bundles, made in memory (fast).

One factory per kind of model, reused by every test file:
    make_seg_bundle(...)   a randomly initialised 4-class U-Net segmentation bundle
    make_seg_bundle_3d(...)   the same for a tiny 3D MONAI UNet (sliding windows)
    make_reg_bundle(...)   a randomly initialised registration (DiscreteRegNet) bundle
and the fixtures built on them: `tiny_bundle_path`, `tiny_reg_model`; and one for engine data:
    adaptation_data(slices, ...)   model-grid target slices as one volume's AdaptationData
"""

from __future__ import annotations

import locale
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

APP_TESTS = Path(__file__).resolve().parent / "app"
TORCH_THREADS = torch.get_num_threads()   # torch's own choice (OMP_NUM_THREADS or the cores)
OWN_THREADS = "OMP_NUM_THREADS" in os.environ
# pytest-xdist workers (addopts: -n auto) already use every core, one test each
PARALLEL_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
if not OWN_THREADS:
    torch.set_num_threads(1)              # module and session fixtures too (see below)


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """One torch CPU thread for every test outside tests/app, unless OMP_NUM_THREADS says how
    many; tests/app keep torch's default.

    Outside tests/app the networks are tiny (or the test sets its own count), so a second
    thread buys little, while on a busy 2-core machine (CI next to other jobs) oversubscribed
    torch threads slow every step several-fold: tests/methods/test_method_adaptsegnet.py +
    test_methods_source_free.py took 20.6 s with torch's 2 threads and 5.6 s with one at a
    load of 3. The app tests run the full-size demo model, for which 2 threads are faster on
    an idle machine (the panel's demo run: 13.8 s against 19.6 s). Set before every test, so
    that no test's own setting leaks into the next. Under pytest-xdist (several workers, one
    per core) every test gets one thread.
    """
    if not OWN_THREADS:
        in_app = APP_TESTS in Path(str(request.node.path)).resolve().parents
        torch.set_num_threads(TORCH_THREADS if in_app and not PARALLEL_WORKERS else 1)


@pytest.fixture(autouse=True)
def _restore_locale():
    """Writing DICOM with SimpleITK (GDCM) switches the process to the C locale, after which
    Python's default text encoding is ASCII; put the locale back after every test."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def blob_volume(shape=(24, 28, 14), seed=0) -> np.ndarray:
    """A bright ellipsoid with a darker core on a noisy background (float32)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    data = np.where(r < 0.8, 100.0, 5.0) - np.where(r < 0.4, 40.0, 0.0)
    return (data + rng.normal(0, 2, shape)).astype(np.float32)


def write_nifti(path, data, affine=None) -> str:
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


# --- the two model factories -----------------------------------------------------------------

SEG_CLASSES = ["background", "CSF", "GM", "WM"]


def make_seg_bundle(*, seed=0, base_channels=4, depth=2, **fields):
    """A randomly initialised 4-class U-Net (early head kept) bundle on a 2 mm, 32 x 32 model
    grid; `fields` replace any ModelBundle field (spacing_mm, in_plane_shape, ...)."""
    from uda_core.io.intensity import DEFAULT_NORMALISATION
    from uda_core.models.bundle import ModelBundle
    from uda_core.models.nets.unet import UNet2D

    torch.manual_seed(seed)
    kwargs = {"in_channels": 1, "num_classes": len(SEG_CLASSES),
              "base_channels": base_channels, "depth": depth, "early_head": True}
    state = UNet2D(**kwargs).state_dict()
    values = dict(
        architecture="unet2d", arch_kwargs=kwargs,
        state_dict={k: v for k, v in state.items() if not k.startswith("early_head.")},
        class_names=list(SEG_CLASSES), modality="T1w",
        spacing_mm=[2.0, 2.0, 2.0], in_plane_shape=[32, 32], orientation="RAS", slice_axis=2,
        normalisation=dict(DEFAULT_NORMALISATION), class_ratio_prior=None,
        early_head_state_dict={k[len("early_head."):]: v for k, v in state.items()
                               if k.startswith("early_head.")},
        provenance={"method": "test"})
    values.update(fields)
    return ModelBundle(**values)


def make_seg_bundle_3d(*, seed=0, roi=16, mirror_axes=(0,), **fields):
    """A randomly initialised 4-class 3D MONAI UNet (channels 4, 8; BatchNorm) bundle at 2 mm
    with ``roi``^3 sliding windows overlapping by 0.25, mirrored along ``mirror_axes``."""
    from uda_core.models.nets import architecture_class

    torch.manual_seed(seed)
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": len(SEG_CLASSES),
              "channels": [4, 8], "strides": [2], "num_res_units": 0, "norm": "batch"}
    network = architecture_class("monai.UNet")(**kwargs)
    window = {"roi_size": [roi] * 3, "overlap": 0.25, "mode": "gaussian",
              "mirror_axes": list(mirror_axes), "axes": [0, 1, 2]}
    values = dict(architecture="monai.UNet", arch_kwargs=kwargs,
                  state_dict=network.state_dict(), early_head_state_dict=None,
                  in_plane_shape=[roi, roi], dims=3, window=window)
    values.update(fields)
    return make_seg_bundle(seed=seed, **values)


def make_reg_bundle(*, seed=0, spacing_mm=(4.0, 4.0, 4.0), in_plane_shape=(48, 56),
                    provenance=None, **net):
    """A randomly initialised registration bundle (DiscreteRegNet: radius 3 px, 7 x 7
    candidates, stride 4, 4 features, smoothing 2 px unless `net` says otherwise) on a
    4 mm, 48 x 56 model grid unless told otherwise."""
    from uda_core.models.bundle.registration import make_registration_bundle
    from uda_core.models.nets.regnet import DiscreteRegNet

    torch.manual_seed(seed)
    settings = {"radius_px": 3.0, "n_per_axis": 7, "stride": 4, "features": 4, "width": 4,
                "smooth_sigma_px": 2.0, **net}
    return make_registration_bundle(DiscreteRegNet(**settings), spacing_mm=spacing_mm,
                                    in_plane_shape=in_plane_shape, provenance=provenance)


def adaptation_data(slices: np.ndarray, **fields):
    """Target slices already on the model grid (N, H, W), as the AdaptationData of one volume
    (identity grid affine, slice positions evenly 0..1); `fields` add the other
    AdaptationData fields (paired, source_images, source_labels)."""
    from uda_core.grid.prepare import ModelInput
    from uda_core.tasks.segmentation_data import AdaptationData

    n, h, w = slices.shape
    inputs = [ModelInput(slices.astype(np.float32), np.eye(4), (h, w, n),
                         np.linspace(0, 1, n).astype(np.float32))]
    return AdaptationData(volumes=[None], inputs=inputs, **fields)


@pytest.fixture(scope="session")
def _tiny_bundle_bytes(tmp_path_factory) -> bytes:
    from uda_core.models.bundle import save_bundle
    path = save_bundle(make_seg_bundle(), tmp_path_factory.mktemp("bundle") / "tiny.pt")
    return path.read_bytes()


@pytest.fixture
def tiny_bundle_path(tmp_path, _tiny_bundle_bytes) -> str:
    """make_seg_bundle() saved as tmp_path/tiny.pt (made once per session, copied per test)."""
    path = tmp_path / "tiny.pt"
    path.write_bytes(_tiny_bundle_bytes)
    return str(path)


@pytest.fixture
def tiny_reg_model(tmp_path) -> str:
    """make_reg_bundle() saved as tmp_path/tiny_reg.pt."""
    from uda_core.models.bundle import save_bundle
    return str(save_bundle(make_reg_bundle(), tmp_path / "tiny_reg.pt"))


@pytest.fixture
def tiny_scan(tmp_path):
    """A small 3D scan at 2 mm, RAS."""
    return write_nifti(tmp_path / "scan.nii.gz", blob_volume())


_EXIT_STATUS = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process without Python's finalisation once every plugin has finished.

    After the whole suite has passed and reported, tearing down the interpreter with Qt,
    napari (vispy/OpenGL under Xvfb), torch and SimpleITK all loaded segfaults in C code (no
    Python frame; PySide6 6.9 and 6.12 alike), which would turn a green run red. The exit
    status is the session's own; the app's own exit is tested separately
    (tests/app/test_scripted_demo.py runs `uda-studio` to a clean exit code 0).
    """
    import sys

    if "PySide6" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    xvfb = sys.modules.get("pytest_xvfb")   # it stops its X server from atexit, which
    if xvfb is not None:                    # os._exit skips
        xvfb.shutdown_xvfb()
    os._exit(_EXIT_STATUS["code"])
