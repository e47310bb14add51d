"""Ask before the main window closes while a panel's run is going."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject


class CloseGuard(QObject):
    """An event filter on napari's main window: its close goes ahead only when
    ``may_close()`` says True (which may ask the user and stop the run first)."""

    def __init__(self, owner: QObject, may_close: Callable[[], bool]):
        super().__init__(owner)
        self.may_close = may_close

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Close and not self.may_close():
            event.ignore()
            return True
        return False


def guard_close(viewer, owner: QObject, may_close: Callable[[], bool]) -> CloseGuard | None:
    """Install a :class:`CloseGuard` on ``viewer``'s window (None when it has none)."""
    qt_window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if qt_window is None:
        return None
    guard = CloseGuard(owner, may_close)
    qt_window.installEventFilter(guard)
    return guard
