"""The app through 1,000 preview refreshes (tests/faults/app_previews.py): the viewer's layer
count and the resident set size at refreshes 1, 10, 100, ..., 1,000, for BENCHMARKS.md.

    DISPLAY=:N PYTHONPATH=. .venv/bin/python scripts/long_run_app_previews.py [--count 1000]

Needs a display (an X server such as Xvfb): the viewer is shown and redraws each refresh.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from app.segmentation import run_box
    from app.segmentation.panel import UdaPanel
    from tests.faults.app_previews import SAMPLES, drive_previews

    with tempfile.TemporaryDirectory() as work:
        run_box.SPEEDS_FILE = Path(work) / "speeds.json"   # not the user's own record
        viewer = napari.Viewer(show=True)
        panel = UdaPanel(viewer)
        viewer.window.add_dock_widget(panel, name="UDA Studio", area="right")
        app = QApplication.instance()
        started = time.perf_counter()
        memory = drive_previews(panel, app.processEvents, args.count,
                                [s for s in SAMPLES if s <= args.count] + [args.count])
        seconds = time.perf_counter() - started
        viewer.close()
    refreshes = sorted(memory)
    print("| refresh | " + " | ".join(str(r) for r in refreshes) + " |")
    print("|---|" + "---:|" * len(refreshes))
    print("| layers | " + " | ".join(str(memory[r][0]) for r in refreshes) + " |")
    print("| RSS MiB | " + " | ".join(f"{memory[r][1]:.1f}" for r in refreshes) + " |")
    warm = memory[min(r for r in refreshes if r >= min(100, args.count))][1]
    end = memory[refreshes[-1]][1]
    print(f"\n{args.count} refreshes in {seconds:.0f} s ({1000 * seconds / args.count:.0f} ms "
          f"each); RSS at refresh 100 {warm:.1f} MiB, at the end {end:.1f} MiB: growth "
          f"{100 * (end / warm - 1):+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
