"""Field help, types, defaults and choices read from config dataclasses (no Qt)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pytest

from uda_core.engine import EngineConfig
from uda_core.engine.config_docs import choices_from_help, field_docs, field_specs, split_optional
from uda_core.methods.adaptsegnet import AdaptSegNetConfig
from uda_core.methods.registry import METHODS
from uda_core.methods.sfda import SFDAConfig

if TYPE_CHECKING:
    from collections import OrderedDict  # only for an annotation that cannot be resolved

CONFIGS = [m.config_class for m in METHODS.values()] + [EngineConfig]


@dataclass
class Commented:
    """A docstring is not a field's help."""

    # The block above documents
    # the field under it.
    above: float = 1.0
    beside: int = 2        # trailing help
                           # continued here
    # One block for a run of fields: learning rate and betas.
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)

    bare: str = "x"
    after_trailing: bool = True  # its own help
    no_help_after_trailing: int = 0
    shares: list[float] = field(default_factory=lambda: [0.5, 0.5])  # a factory default
    unresolvable: OrderedDict | None = None  # resolvable only under TYPE_CHECKING

    def method(self) -> None:
        x = 1  # a comment in a method is nobody's help
        # nor is this one
        del x


@dataclass
class WithChoices:
    CHOICES: ClassVar[dict[str, tuple]] = {"optimiser": ("sgd", "adam"), "level": (1, 2, 3)}

    optimiser: str = "adam"  # our default "adam" (help quotes only one value)
    level: int = 2           # pyramid level
    mode: str = "b"          # "a", "b" or "c"
    free: str = "z"          # quotes "q" and "r", but the default is neither


def test_sfda_lr_help_includes_its_continuation_line():
    help_text = field_docs(SFDAConfig)["lr"]
    assert help_text.startswith("Adam (reference 1e-6 over 100 epochs); 1e-4 fell 0.724 ->")
    assert "0.674 there, and on whole heads 0.736 -> 0.605 (step 300)" in help_text
    assert field_docs(SFDAConfig)["weight_decay"] == "reference"


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_gets_a_spec_with_its_default(config_class):
    specs = field_specs(config_class)
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(config_class)]
    for spec in specs:
        # a dataclass keeps a plain default as a class attribute: an independent check
        assert spec.has_default
        assert spec.default == getattr(config_class, spec.name), spec.name
        assert spec.type is not None and not isinstance(spec.type, str), spec.name


@pytest.mark.parametrize("config_class", [m.config_class for m in METHODS.values()],
                         ids=lambda c: c.__name__)
def test_every_method_field_is_documented(config_class):
    undocumented = [n for n, h in field_docs(config_class).items() if not h.strip()]
    assert undocumented == []


def test_engine_config_help():
    docs = field_docs(EngineConfig)
    assert docs["preview_every"].startswith("PreviewEvent every N steps (and of every target")
    assert docs["preview_every"].endswith("Which target: RunControl.preview_index")
    assert docs["steps"] == "updates in the run"
    assert {n for n, h in docs.items() if not h} <= {"seed", "max_rollbacks"}


def test_types_are_resolved_from_postponed_annotations():
    specs = {s.name: s for s in field_specs(SFDAConfig)}
    assert specs["lr"].type is float and not specs["lr"].optional
    assert specs["user_prior"].optional and specs["user_prior"].base == list[float]
    assert specs["user_prior"].default is None
    adapt = {s.name: s for s in field_specs(AdaptSegNetConfig)}
    assert adapt["lambda_adv"].optional and adapt["lambda_adv"].base is float
    assert adapt["disc_betas"].base == tuple[float, float]
    assert adapt["disc_betas"].default == (0.9, 0.99)


def test_split_optional():
    assert split_optional(int | None) == (int, True)
    assert split_optional(float) == (float, False)
    base, optional = split_optional(int | str | None)
    assert optional and base == int | str


def test_choices_from_help_and_from_the_class():
    sfda = {s.name: s for s in field_specs(SFDAConfig)}
    assert sfda["prior_mode"].choices == ("position", "constant", "user")
    assert sfda["lr"].choices is None and sfda["user_prior"].choices is None
    ddm = {s.name: s for s in field_specs(METHODS["ddm"].config_class)}
    assert ddm["divergence"].choices == ("kl", "hellinger", "bhattacharyya")
    specs = {s.name: s for s in field_specs(WithChoices)}
    assert specs["optimiser"].choices == ("sgd", "adam")
    assert specs["level"].choices == (1, 2, 3)
    assert specs["mode"].choices == ("a", "b", "c")
    assert specs["free"].choices is None
    assert "CHOICES" not in specs
    assert choices_from_help('only "one" value', "one") is None


def test_choices_naming_a_missing_field_is_an_error():
    @dataclass
    class Typo:
        CHOICES: ClassVar[dict[str, tuple]] = {"modee": ("a", "b")}
        mode: str = "a"

    with pytest.raises(ValueError, match="modee"):
        field_specs(Typo)


def test_comment_blocks_trailing_comments_and_shared_blocks():
    docs = field_docs(Commented)
    assert docs["above"] == "The block above documents the field under it."
    assert docs["beside"] == "trailing help continued here"
    assert docs["lr"] == docs["betas"] == "One block for a run of fields: learning rate and betas."
    assert docs["bare"] == ""                       # a blank line ends the shared block
    assert docs["after_trailing"] == "its own help"
    assert docs["no_help_after_trailing"] == ""     # trailing help is never shared
    assert docs["shares"] == "a factory default"
    assert docs["unresolvable"] == "resolvable only under TYPE_CHECKING"
    assert "method" not in docs


def test_factory_defaults_and_unresolvable_annotations():
    specs = {s.name: s for s in field_specs(Commented)}
    assert specs["shares"].default == [0.5, 0.5]
    assert specs["lr"].type is float and specs["bare"].type is str
    assert specs["unresolvable"].optional is False  # left as the annotation's text
    assert isinstance(specs["unresolvable"].type, str)


def test_no_source_gives_empty_help_not_an_error():
    made = dataclasses.make_dataclass("Made", [("a", int, 1), ("b", "float | None", None)])
    assert field_docs(made) == {"a": "", "b": ""}
    specs = field_specs(made)
    assert [(s.name, s.default, s.help) for s in specs] == [("a", 1, ""), ("b", None, "")]
    namespace: dict = {}
    exec("from dataclasses import dataclass\n@dataclass\nclass E:\n    x: int = 3  # hi\n",
         namespace)
    assert field_docs(namespace["E"]) == {"x": ""}


def test_not_a_dataclass():
    with pytest.raises(TypeError):
        field_specs(int)
