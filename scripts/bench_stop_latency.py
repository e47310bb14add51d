"""How soon Stop ends a run that has not stepped yet (issue 17).

`run_adaptation` with ddm on the three demo t2 targets and their paired T1 scans, on a
background thread; Stop (``RunControl.cancel``) is pressed after each delay, while the data
are read, prepared or scored; prints the seconds from Stop to the run's end (RunCancelled).

    python scripts/bench_stop_latency.py
"""

from __future__ import annotations

import tempfile
import threading
import time

import torch

from uda_core.engine import RunControl
from uda_core.errors import RunCancelled
from uda_core.runs.adapt import run_adaptation
from uda_core.synth.demo_files import demo_set

DELAYS_S = (0.05, 0.3, 0.6, 1.0, 2.0)


def stop_after(delay_s: float) -> tuple[float, str]:
    demo = demo_set("t2")
    control = RunControl()
    ended: dict[str, object] = {}

    def run() -> None:
        try:
            run_adaptation("demo:brain-t1", "ddm", demo.targets,
                           tempfile.mkdtemp() + "/run", paired=demo.paired, device="cpu",
                           control=control)
            ended["message"] = "(the first step came first)"
        except RunCancelled as exc:
            ended["message"] = str(exc)
        ended["at"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(delay_s)
    pressed = time.perf_counter()
    control.cancel()
    thread.join()
    return float(ended["at"]) - pressed, str(ended["message"])


def main() -> None:
    torch.set_num_threads(1)
    for delay in DELAYS_S:
        seconds, message = stop_after(delay)
        print(f"Stop at {delay:4.2f} s: ended {seconds:.3f} s later; {message[:70]}")


if __name__ == "__main__":
    main()
