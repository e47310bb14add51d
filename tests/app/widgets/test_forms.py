"""The settings form generated from config dataclasses, and the class-ratio prior table."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass

import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox, QStyleOptionViewItem

from app.segmentation.prior_table import PriorTable
from app.widgets.forms import ConfigForm, field_label, tooltip_html
from uda_core.engine import EngineConfig
from uda_core.engine.field_labels import FIELD_LABELS
from uda_core.methods.registry import METHODS
from uda_core.methods.sfda import SFDAConfig

pytestmark = pytest.mark.gui

CONFIGS = [m.config_class for m in METHODS.values()] + [EngineConfig]


@dataclass
class Shares:
    shares: list[float] | None = None   # class shares, "0.6, 0.4"
    betas: tuple[float, float] = (0.9, 0.99)
    weight: float | None = None         # None: automatic


def _defaults(config_class, hidden=()):
    return {f.name: getattr(config_class, f.name) for f in dataclasses.fields(config_class)
            if f.name not in hidden}


def _type(qtbot, editor: QLineEdit, text: str) -> None:
    editor.clear()
    qtbot.keyClicks(editor, text)


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_form_builds_and_round_trips_defaults(qtbot, config_class):
    form = ConfigForm(config_class)
    qtbot.addWidget(form)
    assert form.values() == _defaults(config_class)
    assert form.errors() == {}
    assert isinstance(form.config(), config_class)
    for name, editor in form.editors.items():
        assert editor.toolTip() == tooltip_html(form.specs[name].help, name=name)
        assert form.specs[name].help in html.unescape(editor.toolTip())


def test_editor_kinds_and_tooltips(qtbot):
    form = ConfigForm(SFDAConfig, hidden=["user_prior", "not_a_field"])
    qtbot.addWidget(form)
    assert isinstance(form.editors["lr"], QLineEdit)
    assert isinstance(form.editors["prior_mode"], QComboBox)
    combo = form.editors["prior_mode"]
    assert [combo.itemText(i) for i in range(combo.count())] == ["position", "constant", "user"]
    assert "user_prior" not in form.editors and "user_prior" not in form.values()
    assert "continuation" not in form.editors["lr"].toolTip()
    assert "on whole heads 0.736 -&gt; 0.605 (step 300)" in form.editors["lr"].toolTip()
    engine = ConfigForm(EngineConfig)
    qtbot.addWidget(engine)
    assert isinstance(engine.editors["steps"], QSpinBox)
    assert isinstance(engine.editors["amp"], QCheckBox)


def test_scientific_notation_and_bad_text(qtbot):
    form = ConfigForm(SFDAConfig)
    qtbot.addWidget(form)
    lr = form.editors["lr"]
    _type(qtbot, lr, "1e-3")
    assert form.values()["lr"] == 0.001
    assert lr.styleSheet() == ""
    _type(qtbot, lr, "1e-3x")
    with pytest.raises(ValueError, match="^lr: '1e-3x' is not a number"):
        form.values()
    assert "border" in lr.styleSheet()
    assert lr.toolTip().startswith("<qt><b>Not valid:</b> &#x27;1e-3x&#x27; is not a number")
    assert set(form.errors()) == {"lr"}
    _type(qtbot, lr, "nan")
    with pytest.raises(ValueError, match="lr"):
        form.values()


def test_reset_restores_defaults_and_clears_errors(qtbot):
    form = ConfigForm(SFDAConfig)
    qtbot.addWidget(form)
    _type(qtbot, form.editors["lr"], "oops")
    form.set_values({"lambda_kl": 3.0, "prior_mode": "constant"})
    assert set(form.errors()) == {"lr"}
    assert form.editors["prior_mode"].currentText() == "constant"
    qtbot.mouseClick(form.reset_button, Qt.LeftButton)
    assert form.values() == _defaults(SFDAConfig)
    assert form.editors["lr"].styleSheet() == ""


def test_set_values_and_changed_signal(qtbot):
    form = ConfigForm(EngineConfig, hidden=["amp"])
    qtbot.addWidget(form)
    with qtbot.waitSignal(form.changed, check_params_cb=lambda name: name == "steps"):
        form.set_values({"steps": 1200})
    assert form.values()["steps"] == 1200
    form.set_values({"amp": False})          # hidden: ignored
    assert "amp" not in form.values()
    with pytest.raises(ValueError, match="no field 'stepz'"):
        form.set_values({"stepz": 3})
    with pytest.raises(ValueError, match="^steps: "):
        form.set_values({"steps": 2.5})
    sfda = ConfigForm(SFDAConfig)
    qtbot.addWidget(sfda)
    with pytest.raises(ValueError, match="^prior_mode: 'bogus' is not one of"):
        sfda.set_values({"prior_mode": "bogus"})


def test_lists_tuples_and_optional_numbers(qtbot):
    form = ConfigForm(Shares)
    qtbot.addWidget(form)
    assert form.values() == {"shares": None, "betas": (0.9, 0.99), "weight": None}
    _type(qtbot, form.editors["shares"], "0.6, 0.1,0.3")
    _type(qtbot, form.editors["weight"], "2.5e-4")
    assert form.values()["shares"] == [0.6, 0.1, 0.3]
    assert form.values()["weight"] == 0.00025
    _type(qtbot, form.editors["betas"], "0.5")
    with pytest.raises(ValueError, match="^betas: needs 2 numbers"):
        form.values()
    _type(qtbot, form.editors["betas"], "")
    with pytest.raises(ValueError, match="^betas: a value is needed"):
        form.values()
    _type(qtbot, form.editors["betas"], "0.5, 0.9")
    _type(qtbot, form.editors["shares"], "")
    assert form.values() == {"shares": None, "betas": (0.5, 0.9), "weight": 0.00025}
    form.set_values({"shares": [0.25, 0.75]})
    assert form.editors["shares"].text() == "0.25, 0.75"


def test_labels():
    assert field_label("lambda_ent") == "Weight of prediction confidence"
    assert field_label("detach_source_branch") == "Keep the T1-weighted answer fixed"
    assert field_label("warmup_steps") == "Warmup steps"    # not listed: spelt out


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_rows_show_plain_labels_and_the_code_name_only_in_tooltips(qtbot, config_class):
    """No row label shows a field's code name (lambda_ent, prior_floor...); every field of
    every shipped config has a written label; the code name is in each tooltip."""
    form = ConfigForm(config_class)
    qtbot.addWidget(form)
    for name, editor in form.editors.items():
        assert name in FIELD_LABELS, f"{config_class.__name__}.{name} has no plain label"
        label = form.layout().itemAt(0).layout().labelForField(editor)
        assert label.text() == FIELD_LABELS[name]
        assert "_" not in label.text()
        assert f"<code>{name}</code>" in label.toolTip()
        assert f"<code>{name}</code>" in editor.toolTip()


# -- the class-ratio prior --------------------------------------------------------------

BUNDLE_PRIOR = {"constant": [0.78, 0.05, 0.09, 0.08], "positions": [0.5],
                "per_position": [[0.78, 0.05, 0.09, 0.08]]}
NAMES = ["background", "CSF", "GM", "WM"]


def _edit_share(table: PriorTable, row: int, percent: float) -> None:
    """Edit one share the way a user does: the delegate's editor, then commit."""
    view = table.table
    index = view.model().index(row, 1)
    delegate = view.itemDelegateForColumn(1)
    editor = delegate.createEditor(view.viewport(), QStyleOptionViewItem(), index)
    delegate.setEditorData(editor, index)
    editor.setValue(percent)
    delegate.setModelData(editor, view.model(), index)
    editor.deleteLater()


def test_prior_table_starts_from_the_model_prior(qtbot):
    table = PriorTable(NAMES, BUNDLE_PRIOR)
    qtbot.addWidget(table)
    assert table.class_names == NAMES
    assert table.shares_percent() == pytest.approx([78, 5, 9, 8])
    assert table.values() == pytest.approx([0.78, 0.05, 0.09, 0.08])
    assert table.has_model_prior and not table.is_user_edited
    assert table.sum_label.text() == "Sum: 100.0 %"
    assert table.reset_button.text() == "Use model's prior"


def test_prior_table_edit_warn_normalise_reset(qtbot):
    table = PriorTable(NAMES, BUNDLE_PRIOR)
    qtbot.addWidget(table)
    with qtbot.waitSignal(table.changed):
        _edit_share(table, 1, 10.0)
    assert table.sum_percent() == pytest.approx(105.0)
    assert "not 100 %" in table.sum_label.text()
    assert table.is_user_edited
    assert sum(table.values()) == pytest.approx(1.0)
    assert table.values()[1] == pytest.approx(10 / 105)
    qtbot.mouseClick(table.normalise_button, Qt.LeftButton)
    assert table.sum_percent() == pytest.approx(100.0)
    assert "not 100" not in table.sum_label.text() and table.is_user_edited
    qtbot.mouseClick(table.reset_button, Qt.LeftButton)
    assert table.shares_percent() == pytest.approx([78, 5, 9, 8])
    assert not table.is_user_edited


def test_prior_table_without_a_model_prior(qtbot):
    table = PriorTable()
    qtbot.addWidget(table)
    with pytest.raises(ValueError, match="no classes"):
        table.values()
    table.set_model_prior(["a", "b", "c"], None)
    assert table.values() == pytest.approx([1 / 3] * 3)
    assert not table.has_model_prior and table.reset_button.text() == "Equal shares"
    table.set_model_prior(NAMES, {"constant": [0.5, 0.5]})   # wrong length: equal shares
    assert table.values() == pytest.approx([0.25] * 4)
    table.set_shares([0, 0, 0, 0])
    with pytest.raises(ValueError, match="not all zero"):
        table.values()
    with pytest.raises(ValueError, match="3 shares for 4 classes"):
        table.set_shares([1, 2, 3])
