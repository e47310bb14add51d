"""The run's data: target volumes (required) and the optional inputs, each entry checked on
its own.

Every file is read off the GUI thread (:func:`app.worker.run_in_background`), one job per
file, with the core's reader (:mod:`uda_core.io.readers`): its entry then shows a tick, or a
cross with the reader's own one-line reason. A bad entry never blocks the others: good
targets are shown as layers (real spacing and orientation) and a run uses the good ones
(:meth:`DataBox.run_inputs` says which it skips and why). Once a model is known, each good
target is also checked against it (:func:`uda_core.models.input_checks.input_mismatches`,
also off the GUI thread) and every mismatch is listed below the lists, one line each.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from uda_core.errors import UdaError
from uda_core.io.files import find_labelled_pairs
from uda_core.io.readers import read_labels, read_volume
from uda_core.methods.base import PAIRED_SOURCE, SOURCE_LABELLED, TARGET
from uda_core.models.input_checks import input_mismatches

from ..segmentation.mask_layers import MaskLayers
from ..widgets.file_list import BAD, GOOD, READING, FileList
from ..worker import run_in_background

KINDS = ("targets", "paired", "source", "reference")


def read_entry(kind: str, path: Path):
    """Runs in a background thread: the Volume of a target or paired image, the labels of a
    reference, the (image, labels) pairs of a source entry; UdaError for a bad one."""
    if kind == "reference":
        return read_labels(path)
    if kind == "source":
        return find_labelled_pairs([path])
    return read_volume(path)


def reason_of(exc: Exception) -> str:
    """The one line shown beside a bad entry: the core's message, or what broke."""
    return str(exc) if isinstance(exc, UdaError) else f"cannot be read ({type(exc).__name__}: " \
                                                     f"{exc})"


@dataclass
class RunInputs:
    """What a run gets: the good targets and, position by position, their paired images and
    reference labels; `skipped`: one line per entry left out, with the reason; `unused`: the
    optional inputs given that the method does not use (not read for the run)."""

    targets: list[Path] = field(default_factory=list)
    paired: list[Path] | None = None
    source: list[Path] | None = None
    reference: list[Path] | None = None
    skipped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


class DataBox(QGroupBox):
    changed = Signal()
    failed = Signal(str)   # kept for callers; an entry's own problem is shown beside it
    loaded = Signal()      # every pending read and check finished (tests, scripted demo)
    mismatches_changed = Signal()

    def __init__(self, layers: MaskLayers, parent: QWidget | None = None):
        super().__init__("2  Data", parent)
        self.layers = layers
        self.targets = FileList("Target volumes", "unlabelled scans from the new scanner or "
                                "contrast (required)")
        self.paired = FileList("Paired source-modality images (optional)",
                               "the source-modality scan (e.g. T1w) of each target's subject, "
                               "same order; needed by ddm")
        self.source = FileList("Labelled source images (optional)",
                               "images with <name>_labels files beside them; needed by "
                               "adaptsegnet")
        self.reference = FileList("Reference labels (optional, evaluation only)",
                                  "tissue labels of the targets, same order: Dice is shown "
                                  "live, never used for training or for choosing",
                                  folders=False)
        self.mismatch_label = QLabel()
        self.mismatch_label.setWordWrap(True)
        self.mismatch_label.setStyleSheet("color: #e8a33d")
        self.mismatch_label.setVisible(False)
        layout = QVBoxLayout(self)
        for kind in KINDS:
            files = self.list_of(kind)
            layout.addWidget(files)
            files.changed.connect(self.changed)
            files.changed.connect(lambda k=kind: self._check_new(k))
        layout.addWidget(self.mismatch_label)
        self._pending = 0
        self._values: dict[tuple[str, str], object] = {}   # (kind, path) -> what was read
        self._bundle = None
        self._model_key = ""
        self._mismatches: dict[tuple[str, str], list[str]] = {}   # (model, path) -> lines

    def list_of(self, kind: str) -> FileList:
        return {"targets": self.targets, "paired": self.paired, "source": self.source,
                "reference": self.reference}[kind]

    def provided(self) -> set[str]:
        provided = set()
        if self.targets.paths():
            provided.add(TARGET)
        if self.paired.paths():
            provided.add(PAIRED_SOURCE)
        if self.source.paths():
            provided.add(SOURCE_LABELLED)
        return provided

    def reading(self) -> list[Path]:
        """The entries still being read (of every kind)."""
        return [p for kind in KINDS for p in self.list_of(kind).paths()
                if self.list_of(kind).status(p) == READING]

    @property
    def busy(self) -> bool:
        return self._pending > 0

    # -- reading each entry ---------------------------------------------------------------------
    def _check_new(self, kind: str) -> None:
        """Read the entries of `kind` not read yet (one background job each)."""
        files = self.list_of(kind)
        listed = {str(p) for p in files.paths()}
        for key in [k for k in self._values if k[0] == kind and k[1] not in listed]:
            del self._values[key]   # removed: read again if added back
        for path in files.paths():
            if (kind, str(path)) in self._values:
                continue
            self._values[(kind, str(path))] = None   # being read
            self._start(read_entry, (kind, path),
                        lambda value, k=kind, p=path: self._on_read(k, p, value),
                        lambda exc, k=kind, p=path: self._on_bad(k, p, exc))
        if kind in ("targets", "reference"):
            self._show_references()
        self._show_mismatches()

    def _start(self, fn, args, on_returned, on_errored) -> None:
        self._pending += 1
        run_in_background(fn, *args, on_returned=on_returned, on_errored=on_errored,
                          on_finished=self._on_finished, name="uda-read-input")

    def _listed(self, kind: str, path: Path) -> bool:
        """Still listed, and the panel still open (a read can end after its window closed)."""
        return (kind, str(path)) in self._values and _alive(self.list_of(kind).list)

    def _on_read(self, kind: str, path: Path, value) -> None:
        if not self._listed(kind, path):
            return   # removed while it was being read
        # targets and references are kept for the viewer; paired and source entries are
        # only checked here (the run reads them itself)
        self._values[(kind, str(path))] = value if kind in ("targets", "reference") else True
        self.list_of(kind).set_status(path, GOOD)
        if kind == "targets":
            self.layers.show_target(path, value)
            self._check_against_model(path)
        elif kind == "reference":
            self._show_references()

    def _on_bad(self, kind: str, path: Path, exc: Exception) -> None:
        if self._listed(kind, path):
            self._values[(kind, str(path))] = False
            self.list_of(kind).set_status(path, BAD, reason_of(exc))

    def _on_finished(self) -> None:
        self._pending -= 1
        if self._pending == 0 and _alive(self):
            self.loaded.emit()


    def _show_references(self) -> None:
        """Each good reference beside the target at its position (when that one is read)."""
        targets = self.targets.paths()
        for position, path in enumerate(self.reference.paths()):
            labels = self._values.get(("reference", str(path)))
            if position < len(targets) and labels not in (None, True, False) and \
                    self.targets.status(targets[position]) == GOOD:
                self.layers.show_reference(targets[position], labels)

    # -- the model's view of each good target -------------------------------------------------
    def set_model(self, spec: str | None, bundle) -> None:
        """The model the targets are checked against (None: none loaded)."""
        self._bundle, self._model_key = bundle, spec or ""
        if bundle is not None:
            for path in self.targets.good_paths():
                self._check_against_model(path)
        self._show_mismatches()

    def _check_against_model(self, path: Path) -> None:
        volume = self._values.get(("targets", str(path)))
        key = (self._model_key, str(path))
        if self._bundle is None or key in self._mismatches or volume in (None, True, False):
            return
        self._mismatches[key] = []
        self._start(input_mismatches, (self._bundle, volume, path),
                    lambda lines, k=key: self._on_mismatches(k, lines),
                    lambda exc, k=key: self._on_mismatches(
                        k, [f"{Path(k[1]).name}: could not be checked against the model "
                            f"({reason_of(exc)})"]))

    def _on_mismatches(self, key, lines: list[str]) -> None:
        self._mismatches[key] = list(lines)
        self._show_mismatches()

    def mismatches(self) -> list[str]:
        """One line per mismatch between a good target and the current model."""
        lines: list[str] = []
        for path in self.targets.good_paths():
            lines += self._mismatches.get((self._model_key, str(path)), [])
        return lines

    def _show_mismatches(self) -> None:
        lines = self.mismatches() if self._bundle is not None else []
        self.mismatch_label.setText("<br>".join(f"⚠ {line}" for line in lines))
        self.mismatch_label.setVisible(bool(lines))
        self.mismatches_changed.emit()

    # -- what a run gets ------------------------------------------------------------------------
    def run_inputs(self, uses: Collection[str] = (PAIRED_SOURCE, SOURCE_LABELLED)
                   ) -> RunInputs:
        """The good entries, matched by position; a target whose paired image is bad (or
        missing) is skipped; the references are dropped when one of the kept targets has none
        that can be read (they are evaluation only). Paired images and labelled source data
        go to the run only when `uses` (the method's needs and optional needs) names them:
        a method that ignores them would still have them read, co-registered and batched."""
        inputs = RunInputs()
        targets = self.targets.paths()
        paired, reference = self.paired.paths(), self.reference.paths()
        if paired and PAIRED_SOURCE not in uses:
            inputs.unused.append("paired images")
            paired = []
        kept_reference: list[Path] = []
        reference_gap = ""
        for position, target in enumerate(targets):
            if self.targets.status(target) != GOOD:
                inputs.skipped.append(self.targets.entry_text(target)[2:])
                continue
            if paired:
                pair = paired[position] if position < len(paired) else None
                if pair is None or self.paired.status(pair) != GOOD:
                    why = "no paired image at its position" if pair is None else \
                        f"its paired image {pair.name} cannot be used"
                    inputs.skipped.append(f"{target.name}: {why}")
                    continue
            inputs.targets.append(target)
            if paired:
                inputs.paired = (inputs.paired or []) + [paired[position]]
            ref = reference[position] if position < len(reference) else None
            if ref is not None and self.reference.status(ref) == GOOD:
                kept_reference.append(ref)
            elif reference and not reference_gap:
                reference_gap = f"no readable reference labels for {target.name}"
        if reference and kept_reference and not reference_gap:
            inputs.reference = kept_reference
        elif reference:
            inputs.skipped.append(f"reference labels ({reference_gap or 'none readable'}; "
                                  "Dice is not shown)")
        if self.source.paths() and SOURCE_LABELLED not in uses:
            inputs.unused.append("labelled scans")
            return inputs
        good_source = self.source.good_paths()
        inputs.source = good_source or None
        inputs.skipped += [self.source.entry_text(p)[2:] for p in self.source.bad_paths()]
        return inputs

    # -- a finished run's masks -----------------------------------------------------------------
    def show_final_masks(self, mask_paths) -> None:
        """Replace each live mask of the run with the chosen checkpoint's mask it wrote."""
        for index, path in enumerate(mask_paths or []):
            self._start(read_labels, (Path(path),),
                        lambda labels, i=index: self._show_final(i, labels),
                        lambda exc: self.failed.emit(reason_of(exc)))

    def _show_final(self, index: int, labels) -> None:
        self.layers.show_mask(index, labels.data.astype("uint8"), before=False)
        if index == 0:
            self.layers.select_mask(0)


def _alive(widget) -> bool:
    """False once Qt has deleted the widget's C++ object (the panel was closed)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True
