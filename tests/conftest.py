"""Shared fixtures: tiny volumes and a tiny model bundle, made in memory (fast)."""

from __future__ import annotations

import locale

import nibabel as nib
import numpy as np
import pytest
import torch


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


@pytest.fixture
def tiny_scan(tmp_path):
    """A small 3D scan at 2 mm, RAS."""
    return write_nifti(tmp_path / "scan.nii.gz", blob_volume())


@pytest.fixture
def tiny_bundle_path(tmp_path):
    """A randomly initialised 4-class U-Net bundle with a 32x32 model grid."""
    from uda_core.io.intensity import DEFAULT_NORMALISATION
    from uda_core.models.bundle import ModelBundle, save_bundle
    from uda_core.models.nets.unet import UNet2D

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 4, "base_channels": 4, "depth": 2,
              "early_head": True}
    net = UNet2D(**kwargs)
    state = net.state_dict()
    bundle = ModelBundle(
        architecture="unet2d", arch_kwargs=kwargs,
        state_dict={k: v for k, v in state.items() if not k.startswith("early_head.")},
        class_names=["background", "CSF", "GM", "WM"], modality="T1w",
        spacing_mm=[2.0, 2.0, 2.0], in_plane_shape=[32, 32], orientation="RAS", slice_axis=2,
        normalisation=dict(DEFAULT_NORMALISATION), class_ratio_prior=None,
        early_head_state_dict={k[len("early_head."):]: v for k, v in state.items()
                               if k.startswith("early_head.")},
        provenance={"method": "test"})
    return str(save_bundle(bundle, tmp_path / "tiny.pt"))


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
    import os
    import sys

    if "PySide6" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    xvfb = sys.modules.get("pytest_xvfb")   # it stops its X server from atexit, which
    if xvfb is not None:                    # os._exit skips
        xvfb.shutdown_xvfb()
    os._exit(_EXIT_STATUS["code"])
