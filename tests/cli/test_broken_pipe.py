"""`uda models | head -1`: a reader that stops early is no error of ours (no message)."""

from __future__ import annotations

import subprocess
import sys


def test_a_closed_pipe_ends_the_command_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "uda_core.cli", "models"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()   # the reader is gone before the command (still importing) writes
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    assert proc.returncode == 141
