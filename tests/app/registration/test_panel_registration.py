"""The registration panel in a real napari viewer (under pytest-xvfb's virtual X server).

Small synthetic pairs (2 mm, a few slices) registered by a randomly initialised registration
bundle and by SimpleITK's B-spline baseline: layers line up with the fixed image, saving
writes three valid files and asks before replacing, Cancel stops a run, and a pair on two
grids gives one clear message naming the moving file.
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import npe2
import numpy as np
import pytest
import torch
from qtpy.QtWidgets import QMessageBox

from app.layers import from_display
from app.registration.panel import DEMO_MODEL, RegistrationPanel, demo_model_installed
from uda_core.exports.overlay import fold_mask
from uda_core.models.bundle import save_bundle
from uda_core.models.bundle.registration import make_registration_bundle
from uda_core.models.nets.regnet import DiscreteRegNet

RUN_MS = 180_000
AFFINE = np.array([[2.0, 0, 0, -30], [0, 2.0, 0, -36], [0, 0, 2.0, -6], [0, 0, 0, 1]])
SHAPE = (32, 36, 6)


def head(shape=SHAPE, seed=0, shift=0) -> np.ndarray:
    """A bright ellipsoid with a darker core, shifted ``shift`` voxels along x (float32)."""
    rng = np.random.default_rng(seed)
    grids = list(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    grids[0] = grids[0] - 2 * shift / shape[0]
    r = np.sqrt(grids[0] ** 2 + grids[1] ** 2 + 0.1 * grids[2] ** 2)
    data = np.where(r < 0.8, 100.0, 5.0) - np.where(r < 0.4, 40.0, 0.0) + 10 * grids[1]
    return (data + rng.normal(0, 2, shape)).astype(np.float32)


def save(path, data, affine=AFFINE) -> str:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


@pytest.fixture
def pair(tmp_path):
    """(fixed, moving, moving labels) files on one 2 mm grid."""
    moving = head(seed=1, shift=2)
    labels = ((moving > 50).astype(np.int16) + (moving > 75)).astype(np.int16)
    return (save(tmp_path / "fixed.nii.gz", head()), save(tmp_path / "moving.nii.gz", moving),
            save(tmp_path / "moving_labels.nii.gz", labels))


@pytest.fixture
def bundle_path(tmp_path):
    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8,
                         smooth_sigma_px=2.0)
    bundle = make_registration_bundle(net, spacing_mm=(2.0, 2.0, 2.0), in_plane_shape=(32, 36))
    return str(save_bundle(bundle, tmp_path / "random-reg.pt"))


@pytest.fixture
def panel(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = RegistrationPanel(viewer)
    viewer.window.add_dock_widget(widget, name="UDA Studio: registration", area="right")
    widget.confirm = lambda title, text: True
    yield widget
    widget.cancel()
    assert widget.wait(RUN_MS / 1000)
    if widget._last_error_box is not None:
        widget._last_error_box.close()


def choose(panel, fixed, moving, labels=None, model="sitk"):
    panel.fixed.set_path(fixed)
    panel.moving.set_path(moving)
    panel.moving_labels.set_path(labels)
    panel.set_model(model)
    panel.device.setCurrentText("cpu")


def wait_idle(panel, qtbot):
    """The worker has stopped and the GUI has handled its last signal."""
    qtbot.waitUntil(lambda: not panel.is_running and panel.register_button.isEnabled(),
                    timeout=RUN_MS)


def register(panel, qtbot):
    with qtbot.waitSignal(panel.registered, timeout=RUN_MS):
        assert panel.register()
    wait_idle(panel, qtbot)
    return panel.outcome


def world_extent(layer) -> np.ndarray:
    return np.asarray(layer.extent.world)


def test_network_run_shows_every_layer_on_the_fixed_grid(panel, qtbot, pair, bundle_path):
    choose(panel, *pair, model=bundle_path)
    outcome = register(panel, qtbot)
    layers = panel.viewer.layers
    names = [layer.name for layer in layers]
    assert names == ["fixed", "moving", "warped", "blend", "Jacobian determinant",
                     "checkerboard", "moving labels warped", "deformation grid",
                     "deformation", "folds"]
    assert [layer.name for layer in layers if layer.visible] == [
        "checkerboard", "deformation", "folds"]
    assert layers.selection.active.name == "checkerboard"
    fixed_extent = world_extent(layers["fixed"])
    for name in ("warped", "checkerboard", "Jacobian determinant", "moving labels warped",
                 "folds", "blend"):
        np.testing.assert_allclose(world_extent(layers[name]), fixed_extent, err_msg=name)
    # the world is (S, P, L) mm: 6 slices of 2 mm along S, 36 voxels along P, 32 along L
    np.testing.assert_allclose(np.ptp(fixed_extent, axis=0), [10, 70, 62])

    jacobian = layers["Jacobian determinant"]
    assert tuple(jacobian.contrast_limits) == (0.0, 2.0)
    colours = jacobian.colormap.map(np.array([0.0, 0.5, 1.0]))
    assert colours[0, 2] > colours[0, 0]  # low det: blue
    np.testing.assert_allclose(colours[1, :3], 1.0, atol=1e-3)  # det 1: white
    assert colours[2, 0] > colours[2, 2]  # high det: red
    folds = layers["folds"]
    assert np.array_equal(from_display(folds.data, AFFINE),
                          fold_mask(outcome.result.jacobian.data))

    arrows = layers["deformation"]
    assert arrows.data.ndim == 3 and arrows.data.shape[1:] == (2, 3) and len(arrows.data)
    assert np.allclose(arrows.affine.affine_matrix, layers["fixed"].affine.affine_matrix)
    # in-plane arrows (the through-plane part of the field is not drawn) on voxel-centre slices
    np.testing.assert_allclose(arrows.data[:, 1, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(arrows.data[:, 0, 0], np.rint(arrows.data[:, 0, 0]))
    labels = from_display(layers["moving labels warped"].data, AFFINE)
    assert np.array_equal(labels, outcome.result.labels_warped.data)
    assert "slices in" in panel.status.text() and "folding" in panel.status.text()
    assert panel.save_button.isEnabled() and panel.register_button.isEnabled()


def test_the_deformation_grid_follows_the_axial_slice(panel, qtbot, pair, bundle_path):
    choose(panel, *pair, model=bundle_path)
    register(panel, qtbot)
    grid = panel.viewer.layers["deformation grid"]
    count = len(grid.data)
    assert count == len(range(2, 32, 4)) + len(range(2, 36, 4))
    grid.visible = True
    for index in (1, 4):
        panel.viewer.dims.set_point(0, -6 + 2.0 * index)  # world S of fixed slice `index`
        assert grid.metadata["slice_index"] == index and len(grid.data) == count
        for line in grid.data:  # display axis 0 is the slice axis (S)
            np.testing.assert_allclose(line[:, 0], index, atol=1e-6)


def test_sitk_run_saves_three_valid_files_and_asks_before_replacing(panel, qtbot, pair,
                                                                    tmp_path):
    choose(panel, *pair, model="sitk")
    outcome = register(panel, qtbot)
    assert outcome.result.method == "sitk" and "SimpleITK" in panel.status.text()
    out = tmp_path / "out"
    out.mkdir()
    with qtbot.waitSignal(panel.saved, timeout=60_000) as saved:
        assert panel.save_to(out)
    names = sorted(p.name for p in saved.args[0])
    assert names == ["moving_field.nii.gz", "moving_labels_warped.nii.gz",
                     "moving_warped.nii.gz"]
    for name in names:
        image = nib.load(out / name)
        np.testing.assert_allclose(image.affine, AFFINE)
        assert image.shape[:3] == SHAPE
    field = nib.load(out / "moving_field.nii.gz")
    assert field.shape == (*SHAPE, 3) and field.get_data_dtype() == np.float32
    np.testing.assert_allclose(field.get_fdata(), outcome.result.field_mm.data, atol=1e-6)
    labels = np.asarray(nib.load(out / "moving_labels_warped.nii.gz").dataobj)
    assert np.array_equal(labels, outcome.result.labels_warped.data)

    asked = []
    panel.confirm = lambda title, text: asked.append(text) or False
    stamps = {p: os.stat(p).st_mtime_ns for p in out.iterdir()}
    assert not panel.save_to(out)
    assert len(asked) == 1 and "moving_warped.nii.gz" in asked[0]
    assert {p: os.stat(p).st_mtime_ns for p in out.iterdir()} == stamps
    assert "kept" in panel.status.text()
    panel.confirm = lambda title, text: asked.append(text) or True
    with qtbot.waitSignal(panel.saved, timeout=60_000):
        assert panel.save_to(out)
    assert len(asked) == 2 and sorted(p.name for p in out.iterdir()) == names


def test_save_never_writes_onto_an_input(panel, qtbot, pair, bundle_path, tmp_path):
    fixed, moving, labels = pair
    clash = tmp_path / "moving_warped.nii.gz"  # the fixed image has the output's name
    os.replace(fixed, clash)
    choose(panel, str(clash), moving, labels, model=bundle_path)
    register(panel, qtbot)
    before = clash.read_bytes()
    with qtbot.waitSignal(panel.failed, timeout=10_000) as failed:
        assert not panel.save_to(tmp_path)
    assert "input" in failed.args[0] and "moving_warped.nii.gz" in failed.args[0]
    assert clash.read_bytes() == before


def test_cancel_stops_a_run(panel, qtbot, tmp_path):
    shape = (32, 36, 40)
    fixed = save(tmp_path / "fixed.nii.gz", head(shape))
    moving = save(tmp_path / "moving.nii.gz", head(shape, seed=1, shift=2))
    choose(panel, fixed, moving, model="sitk")
    panel.progressed.connect(panel.cancel)  # cancel as soon as the first slice is done
    with qtbot.waitSignal(panel.cancelled, timeout=RUN_MS):
        assert panel.register()
    wait_idle(panel, qtbot)
    assert panel.outcome is None and "warped" not in panel.viewer.layers
    assert panel.progress.value() < panel.progress.maximum()
    assert panel.status.text().startswith("Cancelled")
    assert panel.register_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel._last_error_box is None  # cancelling is not an error


def test_different_grids_without_resampling_give_one_message(panel, qtbot, pair, tmp_path,
                                                             bundle_path):
    fixed, _, _ = pair
    finer_affine = np.diag([1.6, 2.0, 2.0, 1.0])
    finer_affine[:3, 3] = AFFINE[:3, 3]   # the same head, sampled finer along x
    finer = save(tmp_path / "finer_moving.nii.gz", head((40, 36, 6), seed=2), finer_affine)
    choose(panel, fixed, finer, model=bundle_path)
    assert panel.resample.isChecked()        # on by default
    panel.resample.setChecked(False)
    with qtbot.waitSignal(panel.failed, timeout=RUN_MS) as failed:
        assert panel.register()
    wait_idle(panel, qtbot)
    message = failed.args[0]
    assert "finer_moving.nii.gz" in message and "fixed.nii.gz" in message
    assert "40 x 36 x 6 voxels of 1.6 x 2 x 2 mm" in message
    assert "Resample moving onto fixed grid" in message and "\n" not in message
    assert "--" not in message and "uda " not in message   # no command-line flag
    boxes = [w for w in panel.findChildren(QMessageBox) if w.isVisible()]
    assert len(boxes) == 1 and boxes[0].text() == message
    assert len(panel.viewer.layers) == 0 and panel.register_button.isEnabled()
    # the same pair with the box ticked registers on the fixed grid
    panel.resample.setChecked(True)
    outcome = register(panel, qtbot)
    assert outcome.result.warped.shape == SHAPE
    assert outcome.moving.shape == (40, 36, 6)  # the "moving" layer shows the file as read


def test_missing_inputs_and_a_segmentation_model_are_clear_messages(panel, qtbot, pair,
                                                                    tiny_bundle_path):
    with qtbot.waitSignal(panel.failed, timeout=5_000):
        assert not panel.register()
    assert "fixed and a moving image" in panel.status.text()
    choose(panel, *pair, model=tiny_bundle_path)
    with qtbot.waitSignal(panel.failed, timeout=RUN_MS) as failed:
        assert panel.register()
    assert "tiny.pt" in failed.args[0] and "registration" in failed.args[0]
    wait_idle(panel, qtbot)


def test_load_demo_fills_in_the_demo_pair(panel):
    panel.load_demo()
    fixed, moving, labels = (panel.fixed.path(), panel.moving.path(),
                             panel.moving_labels.path())
    # the model's own contrast: demo:reg-t1 was trained on T1w pairs
    assert fixed.name == "sub-100_t1.nii.gz" and moving.name == "sub-101_t1.nii.gz"
    assert labels.name == "sub-101_labels.nii.gz"
    assert all(p.is_file() for p in (fixed, moving, labels))
    assert panel.model.currentData() == (DEMO_MODEL if demo_model_installed() else "sitk")


def test_manifest_offers_the_panel():
    from pathlib import Path

    manifest = npe2.PluginManifest.from_file(
        Path(__file__).resolve().parents[3] / "app" / "napari.yaml")
    widgets = {w.command: w.display_name for w in manifest.contributions.widgets}
    assert widgets["uda-studio.registration"] == "UDA Studio: registration"
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands["uda-studio.registration"] == "uda_studio.registration.panel:RegistrationPanel"


def test_similarity_before_and_after_and_a_warning_for_another_contrast(panel, qtbot, pair,
                                                                        bundle_path, tmp_path):
    """The status gives the similarity to the fixed scan before and after; a network model
    given a moving scan of the opposite contrast warns, in plain words, and SimpleITK (made
    for two contrasts) does not."""
    fixed, moving, labels = pair
    choose(panel, fixed, moving, labels, model=bundle_path)
    outcome = register(panel, qtbot)
    assert outcome.warning == "" and not panel.warning.isVisible()
    before = outcome.similarity_before["mutual_info"]
    after = outcome.similarity_after["mutual_info"]
    assert 1.0 <= before <= 2.0 and 1.0 <= after <= 2.0
    assert f"{before:.3f} -> {after:.3f}" in panel.status.text()
    inverted = save(tmp_path / "inverted.nii.gz", 110.0 - head(seed=1, shift=2))
    choose(panel, fixed, inverted, model=bundle_path)
    outcome = register(panel, qtbot)
    assert outcome.similarity_before["correlation"] < 0
    assert "contrast looks unlike the fixed scan's" in outcome.warning
    assert "T1-weighted" in outcome.warning and "SimpleITK" in outcome.warning
    assert not panel.warning.isHidden() and panel.warning.text() == outcome.warning
    choose(panel, fixed, inverted, model="sitk")
    outcome = register(panel, qtbot)
    assert outcome.warning == "" and panel.warning.isHidden()


def test_save_onto_a_full_disk_gives_one_dialog_and_leaves_no_partial_set(
        panel, qtbot, pair, tmp_path, monkeypatch):
    """The disk fills up after the first of the three files (io.atomic's fsync of the second
    raises ENOSPC): one dialog naming the folder, the first file removed again, and the
    next Save into another folder writes all three."""
    import errno

    from uda_core.io import atomic
    choose(panel, *pair, model="sitk")
    register(panel, qtbot)
    full = tmp_path / "full"
    full.mkdir()
    real, done = atomic._fsync, [0]

    def fsync(path, *, folder=False):
        done[0] += 0 if folder else 1
        if done[0] > 1 and not folder:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, folder=folder)
    with monkeypatch.context() as patch:
        patch.setattr(atomic, "_fsync", fsync)
        with qtbot.waitSignal(panel.failed, timeout=60_000) as failed:
            assert panel.save_to(full)
        qtbot.waitUntil(panel.save_button.isEnabled, timeout=10_000)
    message = failed.args[0]
    assert str(full) in message and "no space left" in message and "another folder" in message
    assert panel._last_error_box.isVisible() and panel._last_error_box.text() == message
    assert list(full.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    with qtbot.waitSignal(panel.saved, timeout=60_000) as saved:
        assert panel.save_to(other)
    assert len(saved.args[0]) == 3 and len(list(other.iterdir())) == 3


# -- "Adapt to these scans": MCD on the panel's pair, on the adaptation panel's worker --------

def adapt_run_files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def cli_reg_adapt(argv) -> int:
    import argparse

    from uda_core.cli.reg_adapt import add_reg_adapt_parser
    parser = argparse.ArgumentParser(prog="uda reg")
    add_reg_adapt_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["adapt", *argv])
    return args.func(args)


def start_adapting(panel, qtbot, pair, bundle_path, tmp_path, steps):
    choose(panel, *pair, model=bundle_path)
    panel.adapt.set_open(True)
    panel.adapt.runs_root = tmp_path / "runs"
    panel.adapt.steps.setValue(steps)
    assert panel.adapt.method.currentData() == "pemd"   # the recommended one is the default
    assert panel.adapt.start()
    assert not panel.register_button.isEnabled() and panel.adapt.stop_button.isEnabled()


def test_adapt_run_stops_within_one_step_and_writes_what_uda_reg_adapt_writes(
        panel, qtbot, pair, bundle_path, tmp_path, monkeypatch):
    from app.registration.adapt import RegAdaptRequest
    from uda_core.engine import RunControl
    from uda_core.engine.events import StepEvent
    from uda_core.models.bundle.registration import load_registration_model

    engine_steps, at_cancel = [], []   # seen on the run's thread, without the GUI's delay
    execute, cancel = RegAdaptRequest.execute, RunControl.cancel
    monkeypatch.setattr(RegAdaptRequest, "execute", lambda self, listeners, control: execute(
        self, [*listeners, lambda e: isinstance(e, StepEvent) and engine_steps.append(e.step)],
        control))
    monkeypatch.setattr(RunControl, "cancel",
                        lambda self: (at_cancel.append(len(engine_steps)), cancel(self)))
    panel.adapt.controller.stepped.connect(lambda event: panel.adapt.stop())
    with qtbot.waitSignal(panel.adapt.adapted, timeout=RUN_MS) as finished:
        start_adapting(panel, qtbot, pair, bundle_path, tmp_path, steps=200)
    wait_idle(panel, qtbot)
    summary = finished.args[0]
    assert summary["status"] == "cancelled"
    assert 1 <= summary["steps_done"] <= at_cancel[0] + 1 < 200

    run_dir = (tmp_path / "runs")
    [run_dir] = list(run_dir.iterdir())
    cli_dir = tmp_path / "cli"
    assert cli_reg_adapt(["--model", bundle_path, "--out", str(cli_dir), "--fixed", pair[0],
                          "--moving", pair[1], "--steps", "2", "--device", "cpu"]) == 0
    assert adapt_run_files(run_dir) == adapt_run_files(cli_dir)
    assert {"adapted.pt", "metrics.jsonl", "run.json", "checkpoints/last.pt"} <= \
        adapt_run_files(run_dir)
    ours, theirs = (json.loads((d / "run.json").read_text()) for d in (run_dir, cli_dir))
    assert set(ours) == set(theirs)
    assert ours["fixed"] == theirs["fixed"] and ours["moving"] == theirs["moving"]
    bundle, _ = load_registration_model(run_dir / "adapted.pt")
    assert bundle.provenance["method"] == "mcd-pemd"
    assert bundle.provenance["parent"] == bundle_path
    # the adapted model replaces the chosen one
    assert panel.model.currentData() == str(run_dir / "adapted.pt")


def test_adapt_run_shows_curves_and_the_warp_then_registers_and_saves(panel, qtbot, pair,
                                                                      bundle_path, tmp_path):
    from uda_core.models.bundle.registration import load_registration_model

    previews = []
    panel.adapt.controller.previewed.connect(previews.append)
    with qtbot.waitSignal(panel.adapt.adapted, timeout=RUN_MS) as finished:
        start_adapting(panel, qtbot, pair, bundle_path, tmp_path, steps=3)
    wait_idle(panel, qtbot)
    summary = finished.args[0]
    assert summary["status"] == "completed" and summary["steps_done"] == 3
    assert [e.step for e in previews] == [0]   # preview every 5 steps, and before step 1
    picture = panel.adapt.preview.pixmap()
    assert not picture.isNull() and not panel.adapt.preview.isHidden()
    assert picture.width() > picture.height()   # warped | checkerboard side by side
    series = panel.adapt.curves.series()
    assert [s for s, _ in series["loss/source_ce"]] == [1, 2, 3]
    assert {"loss/discrepancy_b", "loss/discrepancy_c"} <= set(series)   # MCD's terms
    assert "score/mutual_info" in series and series["score/mutual_info"][0][0] == 0

    # Register applies the adapted model
    assert panel.model.currentData() == summary["adapted_model"]
    outcome = register(panel, qtbot)
    assert outcome.request.model == summary["adapted_model"]

    # Save: a loadable bundle, asks before replacing, keeps the file when told no
    target = tmp_path / "mine" / "adapted-reg.pt"
    target.parent.mkdir()
    assert panel.adapt.save_to(target)
    assert load_registration_model(target)[0].provenance["method"] == "mcd-pemd"
    target.write_bytes(b"keep me")
    panel.confirm = lambda title, text: False
    assert not panel.adapt.save_to(target) and target.read_bytes() == b"keep me"
    panel.confirm = lambda title, text: True
    assert panel.adapt.save_to(target)
    assert load_registration_model(target)[0].provenance["method"] == "mcd-pemd"


def test_adapting_needs_a_pair_and_a_model(panel, qtbot, pair):
    panel.adapt.set_open(True)
    assert not panel.adapt.start()
    assert "fixed and a moving" in panel.status.text()
    choose(panel, *pair, model="sitk")
    assert not panel.adapt.start()
    assert "registration model to adapt" in panel.status.text()
    assert not panel.adapt.is_running


def test_closing_the_window_during_an_adaptation_asks_then_stops_it(panel, qtbot, pair,
                                                                    bundle_path, tmp_path):
    start_adapting(panel, qtbot, pair, bundle_path, tmp_path, steps=500)
    qtbot.waitUntil(lambda: panel.adapt.curves.series().get("loss/source_ce"),
                    timeout=RUN_MS)
    panel.confirm = lambda title, text: False
    assert not panel.close_requested() and panel.adapt.is_running
    panel.confirm = lambda title, text: True
    assert panel.close_requested()   # stopped the run and waited for its thread
    qtbot.waitUntil(lambda: not panel.adapt.is_running, timeout=5_000)
    assert panel.adapt.start_button.isEnabled() and panel.register_button.isEnabled()


def test_a_stop_before_the_first_step_says_so_and_writes_no_model(panel, qtbot, pair,
                                                                  bundle_path, tmp_path):
    """Stop pressed right after Start lands before the engine's first step: the designed
    cancellation point ("stopped while starting the run"), not a failure, and no model."""
    from uda_core.engine import RunControl

    check = RunControl.check

    def cancel_then_check(self, doing):   # Stop arrives while the run is being prepared
        self.cancel()
        check(self, doing)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunControl, "check", cancel_then_check)
        with qtbot.waitSignal(panel.adapt.stopped, timeout=RUN_MS) as stopped:
            start_adapting(panel, qtbot, pair, bundle_path, tmp_path, steps=50)
        wait_idle(panel, qtbot)
    assert stopped.args[0].startswith("stopped while")
    assert panel.adapt.status.text().startswith("Stopped while")
    assert "no model was written" in panel.adapt.status.text()
    assert not list((tmp_path / "runs").rglob("adapted.pt"))
    assert panel.adapt.start_button.isEnabled() and panel.register_button.isEnabled()


def test_refine_in_3d_counts_its_steps_and_says_what_it_did(panel, qtbot, pair, bundle_path):
    choose(panel, *pair, model=bundle_path)
    assert panel.refine_3d.isChecked()       # on for pre-aligned pairs, as uda reg apply
    assert panel.request().refine_3d
    seen = []                                        # after the panel's own handler
    panel.progressed.connect(lambda done, total: seen.append(
        (done, total, panel.progress.format())))
    outcome = register(panel, qtbot)
    slices = outcome.result.slices
    assert seen[-1][:2] == (slices + 50, slices + 50)   # the slices, then the 3D steps
    assert all("then any 3D steps" in shown for _, _, shown in seen)
    assert any(note.startswith("3D refinement (50 steps") for note in outcome.result.notes)
    assert {"before_3d", "after_3d"} <= set(outcome.result.similarity)
    assert outcome.result.jacobian.shape == outcome.fixed.shape
    assert "• 3D refinement (50 steps" in panel.status.text()     # the core's notes shown
    assert "head voxels (3D)" in panel.status.text()


def test_a_dropped_learned_step_is_flagged_in_the_panel(panel, qtbot, pair, bundle_path,
                                                        monkeypatch):
    import dataclasses

    import app.registration.run as run_module

    real = run_module.register_volumes

    def dropped(*args, **kwargs):
        result = real(*args, **kwargs)
        return dataclasses.replace(result, fallback=True, notes=[
            *result.notes, "the learned deformation lowered the mutual information: kept the "
            "pre-aligned result instead"])

    monkeypatch.setattr(run_module, "register_volumes", dropped)
    choose(panel, *pair, model=bundle_path)
    register(panel, qtbot)
    assert panel.warning.isVisibleTo(panel)
    assert "pre-aligned result is shown instead" in panel.warning.text()
    assert "• the learned deformation lowered" in panel.status.text()
