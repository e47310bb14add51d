"""Run one `uda` command and SIGKILL it at a chosen write moment (fault injection).

    python kill_child.py SPEC LOG -- uda-arguments...

Write moments are what the process does to files under $FAULT_OUT, seen through an audit hook
(sys.addaudithook: opens for writing, renames, links, removals, folder creation, chmod) and
through os.fsync (wrapped: the moment a temporary is complete but not yet in place). Each is
one line "<kind> <path>" of LOG (io.atomic's temporaries named "<final name> (temporary)"),
written before the moment happens. SPEC: "count" (run to the end, logging every moment), "N"
(kill at the N-th moment, 1-based, before it happens) or "LINE#N" (kill at the N-th moment
logged as LINE). Everything else is the plain command.
"""

from __future__ import annotations

import os
import re
import signal
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
KINDS = {"os.rename": "rename", "os.replace": "replace", "os.link": "link",
         "os.remove": "remove", "os.unlink": "remove", "os.mkdir": "mkdir",
         "os.chmod": "chmod", "os.truncate": "truncate"}


def main() -> int:
    spec, log_path = sys.argv[1], sys.argv[2]
    argv = sys.argv[sys.argv.index("--") + 1:]
    root = os.path.realpath(os.environ["FAULT_OUT"])
    kill_at = kill_line = None
    if "#" in spec:
        kill_line, _, number = spec.rpartition("#")
        kill_at = int(number)
    elif spec != "count":
        kill_at = int(spec)
    temporary = re.compile(r"(^|/)\.(.+)\.[0-9a-f]{12}\.tmp(\.[^/]*)?$")
    log = open(log_path, "w", buffering=1, encoding="utf-8")   # opened before the hook
    seen = 0

    def moment(kind: str, path) -> None:
        nonlocal seen
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if not isinstance(path, str):
            return
        full = os.path.realpath(path)
        if not (full == root or full.startswith(root + os.sep)):
            return
        name = temporary.sub(r"\1\2 (temporary)", os.path.relpath(full, root))
        line = f"{kind} {name}"
        if kill_line is None or line == kill_line:
            seen += 1
        log.write(line + "\n")
        if kill_at is not None and seen >= kill_at:
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else bool(flags & WRITE_FLAGS))
            if writing:
                moment("open", path)
        elif event in KINDS:
            moment(KINDS[event], args[1] if event in ("os.rename", "os.replace", "os.link")
                   else args[0])

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = None
        if path is not None:
            moment("fsync", path)
        real_fsync(fd)

    os.fsync = fsync
    sys.addaudithook(hook)
    from uda_core.cli import main as uda
    return uda(argv)


if __name__ == "__main__":
    sys.exit(main())
