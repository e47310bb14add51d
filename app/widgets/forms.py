"""A settings form generated from a config dataclass (uda_core.engine.config_docs.field_specs).

One row per field: int -> spin box, float -> text box that accepts 1e-4, bool -> check box,
str with choices -> combo box, lists/tuples of numbers -> "0.6, 0.1, ..." (empty = None when
the field allows None). Every editor's tooltip is the field's documented help. Text that does
not parse gets a red border and says why in its tooltip; `values()` then raises ValueError
naming the field.
"""

from __future__ import annotations

import ast
import html
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from uda_core.engine.config_docs import FieldSpec, field_specs
from uda_core.engine.field_labels import field_label

ERROR_STYLE = "QLineEdit { border: 1px solid #e5484d; }"
INT_RANGE = (0, 1_000_000_000)
EDITOR_MIN_WIDTH = 90   # px: a number or a short choice stays readable in a narrow dock


def tooltip_html(help_text: str, error: str = "", name: str = "") -> str:
    """A tooltip Qt word-wraps (rich text): the error first, in bold, when there is one; the
    setting's code name (as config files spell it) last, in small type."""
    if not help_text and not error and not name:
        return ""
    head = f"<b>Not valid:</b> {html.escape(error)}<br><br>" if error else ""
    tail = (f"<br><small>Setting name: <code>{html.escape(name)}</code></small>"
            if name else "")
    return f"<qt>{head}{html.escape(help_text)}{tail}</qt>"


def format_number(value: float | int) -> str:
    """Shortest text that reads back as the same number (1e-06, 0.0001, 3)."""
    return str(value) if isinstance(value, int) else repr(float(value))


def parse_number(text: str, kind: type = float) -> float | int:
    """A finite number from text ("1e-3", " 0.5 "); ValueError with a readable reason."""
    text = text.strip()
    try:
        value = int(text) if kind is int else float(text)
    except ValueError:
        example = "an integer like 16" if kind is int else "a number like 0.001 or 1e-3"
        raise ValueError(f"{text!r} is not {example}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _sequence_shape(base: Any) -> tuple[type, type, int | None] | None:
    """(container, element type, fixed length or None) for list[float], tuple[float, float],
    tuple[int, ...]; None for anything else."""
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is list and len(args) == 1 and args[0] in (int, float):
        return list, args[0], None
    if origin is tuple and args and args[-1] is Ellipsis and args[0] in (int, float):
        return tuple, args[0], None
    if origin is tuple and args and all(a is args[0] for a in args) and args[0] in (int, float):
        return tuple, args[0], len(args)
    return None


class ParsedLineEdit(QLineEdit):
    """A line edit whose text is parsed into a value; bad text gets a red border and the
    reason first in its tooltip."""

    def __init__(self, parse: Callable[[str], Any], format: Callable[[Any], str],
                 help_text: str = "", placeholder: str = "", name: str = ""):
        super().__init__()
        self._parse, self._format, self._help, self._name = parse, format, help_text, name
        self.setPlaceholderText(placeholder)
        self.setToolTip(tooltip_html(help_text, name=name))
        self.textChanged.connect(self._check)

    def field_value(self) -> Any:
        return self._parse(self.text())

    def set_field_value(self, value: Any) -> None:
        self.setText(self._format(value))

    def error(self) -> str:
        """Why the current text is not valid ("" when it is)."""
        try:
            self._parse(self.text())
        except ValueError as exc:
            return str(exc)
        return ""

    def _check(self, *_) -> None:
        reason = self.error()
        self.setStyleSheet(ERROR_STYLE if reason else "")
        self.setToolTip(tooltip_html(self._help, reason, self._name))


def _text_editor(spec: FieldSpec) -> ParsedLineEdit:
    """A ParsedLineEdit for a number, a sequence of numbers, a str, or any Python literal."""
    base, optional = spec.base, spec.optional
    shape = _sequence_shape(base)

    def none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
        def parse_optional(text: str) -> Any:
            if not text.strip():
                if optional:
                    return None
                raise ValueError("a value is needed")
            return parse(text)
        return parse_optional

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        if shape is not None:
            return ", ".join(format_number(v) for v in value)
        if base in (int, float):
            return format_number(value)
        return value if base is str else repr(value)

    if base in (int, float):
        parse = none_or(lambda text: parse_number(text, base))
        placeholder = "None (automatic)" if optional else ""
    elif shape is not None:
        container, kind, length = shape

        def parse(text: str) -> Any:
            items = [parse_number(t, kind) for t in text.replace(";", ",").split(",")]
            if length is not None and len(items) != length:
                raise ValueError(f"needs {length} numbers separated by commas")
            return container(items)
        parse = none_or(parse)
        placeholder = "None: leave empty" if optional else "numbers separated by commas"
    elif base is str:
        parse = none_or(lambda text: text.strip())
        placeholder = ""
    else:
        def parse(text: str) -> Any:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"{text!r} is not a Python literal") from None
        parse = none_or(parse)
        placeholder = "a Python literal"
    return ParsedLineEdit(parse, fmt, spec.help, placeholder, spec.name)


class ChoiceBox(QComboBox):
    def __init__(self, choices: Iterable, help_text: str = "", name: str = ""):
        super().__init__()
        self._choices = tuple(choices)
        for choice in self._choices:
            self.addItem(str(choice))
        self.setToolTip(tooltip_html(help_text, name=name))

    def field_value(self) -> Any:
        return self._choices[self.currentIndex()]

    def set_field_value(self, value: Any) -> None:
        if value not in self._choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, self._choices))}")
        self.setCurrentIndex(self._choices.index(value))


class IntBox(QSpinBox):
    def __init__(self, help_text: str = "", minimum: int = INT_RANGE[0], name: str = ""):
        super().__init__()
        self.setRange(minimum, INT_RANGE[1])
        self.setToolTip(tooltip_html(help_text, name=name))

    def field_value(self) -> int:
        return self.value()

    def set_field_value(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if not self.minimum() <= value <= self.maximum():
            raise ValueError(f"{value} is outside {self.minimum()}..{self.maximum()}")
        self.setValue(value)


class BoolBox(QCheckBox):
    def __init__(self, help_text: str = "", name: str = ""):
        super().__init__()
        self.setToolTip(tooltip_html(help_text, name=name))

    def field_value(self) -> bool:
        return self.isChecked()

    def set_field_value(self, value: Any) -> None:
        self.setChecked(bool(value))


def make_editor(spec: FieldSpec) -> QWidget:
    """The editor widget for one field (has field_value() and set_field_value())."""
    if spec.choices and not spec.optional:
        return ChoiceBox(spec.choices, spec.help, spec.name)
    if spec.base is bool and not spec.optional:
        return BoolBox(spec.help, spec.name)
    if spec.base is int and not spec.optional:
        negative_default = isinstance(spec.default, int) and spec.default < 0
        return IntBox(spec.help, minimum=-INT_RANGE[1] if negative_default else INT_RANGE[0],
                      name=spec.name)
    return _text_editor(spec)


def _changed_signal(editor: QWidget):
    if isinstance(editor, QLineEdit):
        return editor.textChanged
    if isinstance(editor, QComboBox):
        return editor.currentIndexChanged
    if isinstance(editor, QCheckBox):
        return editor.toggled
    return editor.valueChanged


def _row_label(spec: FieldSpec) -> QLabel:
    """The setting's plain label; its help and code name are in the tooltip."""
    label = QLabel(field_label(spec.name))
    label.setTextFormat(Qt.PlainText)
    label.setWordWrap(True)
    label.setToolTip(tooltip_html(spec.help, name=spec.name))
    return label


class ConfigForm(QWidget):
    """Editors for the fields of `config_class`, except those named in `hidden`.

    values() -> {field: value} of the shown fields (ValueError naming the first invalid
    field); set_values(dict) sets some of them (hidden ones are ignored); reset() restores
    the defaults; config(**extra) builds the dataclass. `changed(name)` fires on any edit.
    """

    changed = Signal(str)

    def __init__(self, config_class: type, hidden: Iterable[str] = (),
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.config_class = config_class
        self.specs = {s.name: s for s in field_specs(config_class)}
        self.hidden = {name for name in hidden if name in self.specs}
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)   # narrow dock: editor below label
        form.setLabelAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        for name, spec in self.specs.items():
            if name in self.hidden:
                continue
            editor = make_editor(spec)
            editor.setObjectName(name)
            editor.setMinimumWidth(EDITOR_MIN_WIDTH)
            _changed_signal(editor).connect(lambda *_, n=name: self.changed.emit(n))
            self.editors[name] = editor
            form.addRow(_row_label(spec), editor)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip("Put every setting above back to its documented default")
        self.reset_button.clicked.connect(self.reset)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(buttons)
        self.reset()

    def defaults(self) -> dict[str, Any]:
        """The documented defaults of the shown fields that have one."""
        return {n: self.specs[n].default for n in self.editors if self.specs[n].has_default}

    def reset(self) -> None:
        self.set_values(self.defaults())

    def set_values(self, values: dict[str, Any]) -> None:
        """Show `values` in their editors; ValueError naming a field the config does not
        have or a value its editor cannot show. Hidden fields are ignored."""
        unknown = sorted(set(values) - set(self.specs))
        if unknown:
            raise ValueError(f"{self.config_class.__name__} has no field {unknown[0]!r}")
        for name, value in values.items():
            if name in self.editors:
                try:
                    self.editors[name].set_field_value(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None

    def errors(self) -> dict[str, str]:
        """{field: reason} for every shown field whose text does not parse."""
        found = {}
        for name, editor in self.editors.items():
            try:
                editor.field_value()
            except ValueError as exc:
                found[name] = str(exc)
        return found

    def values(self) -> dict[str, Any]:
        """The shown fields' values; ValueError naming the first field with bad text."""
        result = {}
        for name, editor in self.editors.items():
            try:
                result[name] = editor.field_value()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return result

    def config(self, **extra: Any) -> Any:
        """An instance of the config class from values() and `extra` (hidden fields keep
        their defaults unless given)."""
        return self.config_class(**{**self.values(), **extra})
