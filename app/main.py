"""`uda-studio`: napari with the UDA Studio panel docked; `--demo` loads the built-in demo.

Scripted demo (kiosks, demos, CI smoke tests):
    uda-studio --demo --method ddm --steps 60 --screenshot shot.png --exit-when-done
runs the whole click path unattended (load, Start, wait, final masks) and saves a screenshot of
the final window. Exit code 0 when the run completed, 1 when it could not start or failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uda_core.methods.catalogue import SUMMARIES
from uda_core.synth.demo_files import DEMO_DOMAINS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uda-studio", description="UDA Studio: adapt a pretrained MRI network to your "
        "scanner without annotations (napari desktop app).")
    parser.add_argument("targets", nargs="*", help="target volumes to open (NIfTI, MGZ, MHA, "
                        "NRRD or DICOM folders)")
    parser.add_argument("--demo", nargs="?", const="t2", choices=sorted(DEMO_DOMAINS),
                        help="load the built-in demo (default domain: t2)")
    parser.add_argument("--model", help="model bundle, TorchScript file or built-in name")
    parser.add_argument("--method", choices=sorted(SUMMARIES), help="adaptation method")
    parser.add_argument("--steps", type=int, help="adaptation steps")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None)
    parser.add_argument("--out", help="folder for the run's results (default: a new folder "
                        "under ~/UDA-Studio/runs)")
    parser.add_argument("--screenshot", help="save a PNG of the window when the run ends")
    parser.add_argument("--window-size", metavar="WxH", type=_window_size,
                        help="the window's size in pixels, e.g. 1280x800 (default: napari's)")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="start the run at once and quit when it ends")
    return parser


def _window_size(text: str) -> tuple[int, int]:
    """"1280x800" -> (1280, 800); argparse's error for anything else."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1280x800") from None
    if width < 320 or height < 240:
        raise argparse.ArgumentTypeError(f"{text!r} is too small (at least 320x240)")
    return width, height


class ScriptedRun:
    """Drives the panel unattended: waits for the data, presses Start, waits for the final
    masks, saves the screenshot, quits."""

    def __init__(self, viewer, panel, screenshot: str | None, exit_when_done: bool):
        self.viewer, self.panel = viewer, panel
        self.screenshot, self.exit_when_done = screenshot, exit_when_done
        self.exit_code = 0
        self.finished = False
        panel.controller.finished.connect(self._on_finished)
        panel.controller.failed.connect(self._on_failed)

    def begin(self) -> None:
        if self.panel.data_box.busy:
            self.panel.data_box.loaded.connect(self._start_once)
        else:
            self._start_once()

    def _start_once(self) -> None:
        try:
            self.panel.data_box.loaded.disconnect(self._start_once)
        except (RuntimeError, TypeError):
            pass
        _centre_view(self.viewer)
        if not self.panel.start():
            print(f"uda-studio: {self.panel.run_box.status.text()}", file=sys.stderr)
            self._end(1)

    def _on_finished(self, summary: dict) -> None:
        self.finished = True
        self.exit_code = 0 if summary.get("status") != "cancelled" else 1
        # the chosen masks are read back in a worker; take the picture when they are shown
        if self.panel.data_box.busy:
            self.panel.data_box.loaded.connect(lambda: self._end(self.exit_code))
        else:
            self._end(self.exit_code)

    def _on_failed(self, message: str, _details: str) -> None:
        print(f"uda-studio: {message}", file=sys.stderr)
        self._end(1)

    def _end(self, code: int) -> None:
        from qtpy.QtCore import QTimer

        self.exit_code = code
        if self.screenshot:
            QTimer.singleShot(300, self._save_screenshot)
        elif self.exit_when_done:
            QTimer.singleShot(0, self._quit)

    def _save_screenshot(self) -> None:
        path = Path(self.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.viewer.window.screenshot(str(path), canvas_only=False, flash=False)
        print(f"uda-studio: screenshot saved to {path}")
        if self.exit_when_done:
            self._quit()

    def _quit(self) -> None:
        from qtpy.QtWidgets import QApplication

        self.viewer.close()
        QApplication.quit()


def _centre_view(viewer) -> None:
    """Middle axial slice of the first layer, zoomed to fit."""
    if len(viewer.layers):
        lo, hi = viewer.layers[0].extent.world
        viewer.dims.set_point(0, (lo[0] + hi[0]) / 2)
    viewer.reset_view()


def open_studio(args):
    """Create the viewer and the docked panel as `args` say; returns (viewer, panel)."""
    import napari
    from qtpy.QtCore import QTimer

    from .about import brand_window
    from .layers import AXIS_LABELS, CAMERA_ORIENTATION, CONVENTION_NOTE, keep_head_up
    from .registration.panel import RegistrationPanel
    from .segmentation.panel import UdaPanel
    from .worker import warm_up

    warm_up()   # torch's lazy imports, done before the window shows instead of mid-run
    viewer = napari.Viewer(title="UDA Studio")
    brand_window(viewer)   # title with the version, icon, About dialog
    viewer.dims.axis_labels = AXIS_LABELS            # our layers' world axes: (S, P, L) mm
    viewer.scene.camera.orientation = CAMERA_ORIENTATION  # so the 3D view is not mirrored
    keep_head_up(viewer)                             # coronal and sagittal views: head up
    note = viewer.canvas.overlays.text              # napari >= 0.9 (viewer.text_overlay before)
    note.text, note.position, note.font_size, note.visible = (CONVENTION_NOTE, "bottom_left",
                                                              7, True)
    if getattr(args, "window_size", None):
        viewer.window._qt_window.resize(*args.window_size)
    panel = UdaPanel(viewer)
    panel_dock = viewer.window.add_dock_widget(panel, name="UDA Studio", area="right")
    registration = RegistrationPanel(viewer)
    registration_dock = viewer.window.add_dock_widget(
        registration, name="UDA Studio: registration", area="right", tabify=True)
    panel.registration = registration
    panel.dock, panel.registration_dock = panel_dock, registration_dock
    # the live curves are the adaptation's: out of the way while registration is in front
    registration_dock.visibilityChanged.connect(panel.on_registration_tab)
    if args.demo:
        panel.load_demo(args.demo)
        registration.load_demo()
    QTimer.singleShot(0, panel_dock.raise_)   # the adaptation panel is the tab shown first
    if args.model:
        panel.model_box.load(args.model)
    if args.targets:
        panel.data_box.targets.set_paths(args.targets)
    if args.method:
        panel.method_box.select(args.method)
    if args.steps:
        panel.method_box.set_steps(args.steps)
    if args.device:
        panel.run_box.device.setCurrentText(args.device)
    if args.out:
        panel.run_box.out_dir.setText(args.out)
    return viewer, panel


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import napari

    viewer, panel = open_studio(args)
    scripted = None
    if args.exit_when_done or args.screenshot:
        scripted = ScriptedRun(viewer, panel, args.screenshot, args.exit_when_done)
        scripted.begin()
    napari.run()
    return scripted.exit_code if scripted else 0


if __name__ == "__main__":
    sys.exit(main())
