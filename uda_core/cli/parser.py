"""The `uda` command line: the same core the desktop app uses, for scripts and clusters.

One module per command group, each adding its sub-commands with ``add_parsers``: predict.py
(predict, evaluate), data.py (demo-data, models), imports.py (import-model), train.py
(train-source), adapt.py (adapt), bench.py (bench), reg.py (the `uda reg` group). Shared
helpers are in common.py. Heavy modules (torch) are imported inside the commands, so
`uda --help` stays fast.

Errors the user can fix print one line on stderr naming the file and the problem and exit with
status 1 (no traceback unless --debug). Ctrl-C exits with 130, leaving no half-written file.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from uda_core import __version__
from uda_core.cli import adapt, bench, data, imports, predict, reg, train
from uda_core.cli.common import EXIT_CANCELLED, EXIT_INTERNAL_ERROR, EXIT_USER_ERROR
from uda_core.errors import RunCancelled, UdaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uda",
        description="UDA Studio: adapt a pretrained MRI network to new scans without labels.")
    parser.add_argument("--version", action="version", version=f"uda-studio {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something goes wrong")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict.add_parsers(sub)    # predict, evaluate
    data.add_parsers(sub)       # demo-data, models
    imports.add_parsers(sub)    # import-model
    train.add_parsers(sub)      # train-source
    adapt.add_parsers(sub)      # adapt
    bench.add_parsers(sub)      # bench
    reg.add_reg_parser(sub)     # reg train-source | apply | adapt | bench
    return parser


#: what a shell reports for a command killed by SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RunCancelled as exc:   # the first Ctrl-C before any adaptation step
        print(f"uda {args.command}: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except UdaError as exc:
        if args.debug:
            raise
        print(f"uda {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"uda {args.command}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:   # the reader went away (`uda models | head`): no message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # for the flush at exit
        return EXIT_BROKEN_PIPE
    except OSError as exc:   # a write outside io.atomic (metrics.jsonl, a folder)
        from uda_core.io.atomic import output_error
        writing = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)   # never a read
        place = writing and exc.filename and output_error(exc, Path(exc.filename).parent)
        if args.debug:
            raise
        if not place:
            return _internal_error(args.command, exc)
        print(f"uda {args.command}: error: {place}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        if args.debug:
            raise
        print(f"uda {args.command}: error: out of memory", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if args.debug:
            raise
        return _internal_error(args.command, exc)


def _internal_error(command: str, exc: BaseException) -> int:
    print(f"uda {command}: internal error: {type(exc).__name__}: {exc} "
          "(run with --debug for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
