"""The `uda` command line: thin commands over the library functions in :mod:`uda_core.runs`."""

from uda_core.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
