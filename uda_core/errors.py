"""Errors the user can act on.

Every problem with the user's input (a file, a folder, a model, an option) is raised as a
:class:`UdaError` whose message is one line naming the file and the problem. The command
line prints exactly that line; the GUI shows it in a dialog.
"""

from __future__ import annotations

from os import PathLike


class UdaError(Exception):
    """A problem the user can fix, described in one line."""

    def __init__(self, problem: str, path: str | PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class InputError(UdaError):
    """An input volume, folder or label map cannot be used."""


class ModelError(UdaError):
    """A model file cannot be loaded or does not fit the task."""


class OutputError(UdaError):
    """An output folder cannot take the files: full, read-only or not writable."""


class RunCancelled(UdaError):
    """Stop was asked for before the first adaptation step: nothing was adapted and no model
    was written (raised at the cancellation points of loading and of the first scoring)."""
