"""Choosing the adaptation method and its settings.

Methods whose data is missing stay in the list, greyed out, with the reason beside them; the
one the product recommends for the data given says "(recommended)". Below the list, one line
in clinical words says what the chosen method does. Its settings (a form generated from its
config dataclass, the class-ratio prior, the engine's run settings) sit in a folded
"Advanced settings" section; only the chosen method's form is laid out, so the section is as
tall as that form and no taller.

What the user sets is kept: a new model or new data only re-greys the methods (and gives the
prior table the new model's classes, keeping edited shares when the classes are the same);
a method's own number of steps is shown only until the user sets Steps. Only "Defaults" (in
the advanced section) puts every setting back.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QStandardItem, QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from uda_core.engine import EngineConfig
from uda_core.methods.base import PAIRED_SOURCE, PRIOR, SOURCE_LABELLED
from uda_core.methods.catalogue import CLINICAL, EXPERIMENTAL, help_line, label
from uda_core.methods.recommend import Recommendation, recommend
from uda_core.methods.registry import METHODS, missing_needs

from ..segmentation.prior_table import PriorTable
from ..widgets.collapsible import Collapsible
from ..widgets.forms import ConfigForm

LINK_COLOUR = "#6ab0ff"   # readable on napari's dark theme and its light one
# Engine settings a user may want to change before a run (the rest keep their defaults).
ENGINE_FIELDS_SHOWN = ("steps", "batch_size", "select_by", "score_every", "preview_every",
                       "collapse_guard", "seed")
# Method settings handled elsewhere (the prior table, or filled in by the run itself).
METHOD_FIELDS_HIDDEN = ("total_steps", "user_prior")


class MethodBox(QGroupBox):
    method_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Method", parent)
        self.model = QStandardItemModel(self)
        for name in METHODS:
            item = QStandardItem(label(name))
            item.setData(name, Qt.UserRole)
            item.setToolTip(help_line(name))
            self.model.appendRow(item)
        self.choice = QComboBox()
        self.choice.setModel(self.model)
        # as wide as the dock allows, never wider (long item texts must not widen the panel)
        self.choice.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.choice.setMinimumContentsLength(12)
        self.choice.currentIndexChanged.connect(self._on_choice)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.recommendation = QLabel()
        self.recommendation.setWordWrap(True)
        self.recommendation.linkActivated.connect(self._use_recommendation)
        self._recommended: Recommendation | None = None
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet("color: #e8a33d")
        self.forms = QWidget()        # every method's form; only the chosen one is shown
        forms_layout = QVBoxLayout(self.forms)
        forms_layout.setContentsMargins(0, 0, 0, 0)
        self._form_for: dict[str, ConfigForm] = {}
        for name, method in METHODS.items():
            hidden = [f for f in METHOD_FIELDS_HIDDEN if hasattr(method.config_class, f)
                      or f in method.config_class.__dataclass_fields__]
            form = ConfigForm(method.config_class, hidden=hidden)
            form.setVisible(False)
            self._form_for[name] = form
            forms_layout.addWidget(form)
        self.prior = PriorTable()
        self.prior_label = QLabel("<b>Expected tissue shares</b> <small>(share of each class "
                                  "in a slice; edit to use your own)</small>")
        self.prior_label.setWordWrap(True)
        engine_hidden = [f for f in EngineConfig.__dataclass_fields__
                         if f not in ENGINE_FIELDS_SHOWN]
        self.engine_form = ConfigForm(EngineConfig, hidden=engine_hidden)
        self._engine_defaults: dict = {}    # the app's own defaults (e.g. preview_every)
        self._steps_set_by_user = False
        self._select_by_set_by_user = False
        self._setting_steps = False
        self.engine_form.changed.connect(self._on_engine_edit)
        self.defaults_button = QPushButton("Defaults")
        self.defaults_button.setToolTip("Put every method and run setting, the class-ratio "
                                        "prior and standardisation back to their defaults")
        self.defaults_button.clicked.connect(self.restore_defaults)
        self.standardise = QCheckBox("Standardise intensities first")
        self._chosen_standardise = False   # the user's choice while a method implies it
        self.standardise.setToolTip(
            "Even out each scan's bias field (N4) and match its intensities inside the "
            "brain to the model's source data before adapting (quantile matching), when "
            "the model scores better on the "
            "matched scans (flip/brightness consistency up, entropy down); the run says "
            "which. Helps another scanner of the same weighting (T1w to T1w); not T1w to "
            "T2w.")
        self.advanced = Collapsible("Advanced settings", tooltip="The method's settings, the "
                                    "expected tissue shares and the run's settings; the "
                                    "defaults are the benchmarked ones")
        self.advanced.add(self.standardise)
        self.advanced.add(QLabel("<b>Method settings</b>"))
        self.advanced.add(self.forms)
        self.advanced.add(self.prior_label)
        self.advanced.add(self.prior)
        self.advanced.add(QLabel("<b>Run settings</b>"))
        self.advanced.add(self.engine_form)
        self.advanced.add(self.defaults_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.choice)
        layout.addWidget(self.summary)
        layout.addWidget(self.recommendation)
        layout.addWidget(self.reason)
        layout.addWidget(self.advanced)
        self._missing: dict[str, list[str]] = {}
        self._prior_model: tuple | None = None   # (class names, prior) the table was given
        self._on_choice()

    @property
    def method(self) -> str:
        return self.choice.currentData(Qt.UserRole)

    def select(self, name: str) -> None:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
        self.choice.setCurrentIndex(list(METHODS).index(name))

    def update_availability(self, bundle, provided: set[str]) -> None:
        """Grey out methods whose needs are not met by `bundle` and the data `provided`."""
        self._missing = {}
        for row, name in enumerate(METHODS):
            missing = [] if bundle is None else missing_needs(METHODS[name], bundle, provided)
            self._missing[name] = missing
            item = self.model.item(row)
            item.setEnabled(not missing)
            item.setToolTip(help_line(name) + ("\nNeeds: " + "; ".join(missing)
                                               if missing else ""))
        if bundle is not None:
            self._give_prior(bundle)
        self._show_recommendation(bundle, provided)
        self._show_reason()

    def _give_prior(self, bundle) -> None:
        """The model's classes and prior for the table; shares the user edited are kept
        when the classes are the same."""
        given = (tuple(bundle.class_names), repr(bundle.class_ratio_prior))
        if given == self._prior_model:
            return
        edited = self.prior.shares_percent() if (
            self.prior.is_user_edited and self._prior_model is not None
            and self._prior_model[0] == given[0]) else None
        self._prior_model = given
        self.prior.set_model_prior(bundle.class_names, bundle.class_ratio_prior)
        if edited is not None:
            self.prior.set_shares(edited)

    def set_engine_defaults(self, values: dict) -> None:
        """The app's defaults for some run settings (shown now and by Defaults)."""
        self._engine_defaults.update(values)
        self.engine_form.set_values(values)

    def restore_defaults(self) -> None:
        """Every setting back to its default: method forms, run settings (the chosen
        method's steps), the model's prior, no standardisation."""
        for form in self._form_for.values():
            form.reset()
        self.engine_form.reset()
        self.engine_form.set_values(self._engine_defaults)
        self._steps_set_by_user = False
        self._select_by_set_by_user = False
        self._show_default_steps()
        self.prior.use_model_prior()
        if self.standardise.isEnabled():
            self.standardise.setChecked(False)
        self._chosen_standardise = False

    def _on_engine_edit(self, name: str) -> None:
        if self._setting_steps:
            return
        if name == "steps":
            self._steps_set_by_user = True
        elif name == "select_by":
            self._select_by_set_by_user = True

    def _show_default_steps(self) -> None:
        """The method's own steps and select_by, where the user has not chosen them."""
        method = METHODS[self.method]
        values: dict[str, object] = {}
        if not self._steps_set_by_user:
            values["steps"] = method.default_steps
        if not self._select_by_set_by_user:
            values["select_by"] = method.default_select_by
        self._setting_steps = True
        try:
            self.engine_form.set_values(values)
        finally:
            self._setting_steps = False

    def _show_reason(self) -> None:
        self.reason.setText(self.unavailable_reason())
        self.reason.setVisible(bool(self.unavailable_reason()))

    def _show_recommendation(self, bundle, provided: set[str]) -> None:
        """'Recommended: ddm (use it)' with the reason as its tooltip, or nothing when the
        recommended method cannot run with this model."""
        choice = recommend(PAIRED_SOURCE in provided, SOURCE_LABELLED in provided,
                           guide_fits=bundle is not None
                           and not missing_needs(METHODS["blend"], bundle, provided))
        usable = bundle is not None and not missing_needs(METHODS[choice.method], bundle,
                                                          provided)
        self._recommended = choice if usable else None
        for row, name in enumerate(METHODS):
            tag = " (recommended)" if usable and name == choice.method else ""
            self.model.item(row).setText(label(name) + tag)
        self._show_recommendation_line()

    def _show_recommendation_line(self) -> None:
        """"Recommended for your data: standardise (use it)" unless it is the one chosen."""
        choice = self._recommended
        shown = choice is not None and choice.method != self.method
        self.recommendation.setVisible(shown)
        if shown:
            extra = " with standardised intensities" if (
                choice.standardise and not METHODS[choice.method].standardises_input) else ""
            self.recommendation.setText(
                f"<small>Recommended for your data: <b>{choice.method}</b>{extra} "
                f"(<a href='use' style='color:{LINK_COLOUR}'>use it</a>)</small>")
            self.recommendation.setToolTip(choice.reason)

    def _use_recommendation(self, *_) -> None:
        if self._recommended is not None:
            self.select(self._recommended.method)
            if self.standardise.isEnabled():
                self.standardise.setChecked(self._recommended.standardise)

    def unavailable_reason(self) -> str:
        missing = self._missing.get(self.method, [])
        return f"{self.method} needs " + "; and ".join(missing) if missing else ""

    def method_settings(self) -> dict:
        """The chosen method's settings (ValueError naming a field with a bad value)."""
        values = self._form_for[self.method].values()
        if self._uses_prior() and self.prior.is_user_edited:
            values.update(prior_mode="user", user_prior=self.prior.values())
        return values

    def engine_settings(self) -> dict:
        return self.engine_form.values()

    def set_steps(self, steps: int) -> None:
        """Steps as the user's choice (kept across method, model and data changes)."""
        self.engine_form.set_values({"steps": int(steps)})
        self._steps_set_by_user = True

    def _uses_prior(self) -> bool:
        return PRIOR in METHODS[self.method].needs

    def _on_choice(self, *_) -> None:
        name = self.method
        note = (f"<br><span style='color:#e8a33d'>{EXPERIMENTAL[name]}</span>"
                if name in EXPERIMENTAL else "")
        self.summary.setText(f"{CLINICAL[name]}<small>{note}</small>")
        self.summary.setToolTip(help_line(name))
        implied = METHODS[name].standardises_input   # the standardise method itself
        if implied and self.standardise.isEnabled():
            self._chosen_standardise = self.standardise.isChecked()
            self.standardise.setChecked(True)
        elif not implied and not self.standardise.isEnabled():
            self.standardise.setChecked(self._chosen_standardise)
        self.standardise.setEnabled(not implied)
        self._show_reason()
        for method_name, form in self._form_for.items():
            form.setVisible(method_name == name)
        self._show_recommendation_line()
        self._show_default_steps()
        self.prior.setVisible(self._uses_prior())
        self.prior_label.setVisible(self._uses_prior())
        self.method_changed.emit(name)
