"""What every adaptation method is: a config dataclass, declared data needs, and step().

A method owns the network's trainable parameters and its optimiser(s). The engine owns
everything else: batches, device, events, scores, checkpoints, cancel and rollback.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

import torch

from uda_core.models.distributed import average_gradients

# Data a method may need. The engine checks them before anything runs.
TARGET = "target"                   # unlabelled target volumes (every method)
PAIRED_SOURCE = "paired_source"     # source-modality images of the same subjects (ddm)
SOURCE_LABELLED = "source_labelled" # labelled source images (adaptsegnet)
EARLY_HEAD = "early_head"           # the bundle's early-feature head (early)
PRIOR = "prior"                     # the bundle's class-ratio prior (sfda; may be user-given)
INTERNALS = "internals"             # a bundle with a state dict, not TorchScript
INTENSITY_REFERENCE = "intensity_reference"  # the bundle's source intensity percentiles

NEED_DESCRIPTIONS = {
    TARGET: "unlabelled target volumes",
    PAIRED_SOURCE: "a source-modality image of the same subject for each target volume "
                   "(e.g. its T1 beside the T2)",
    SOURCE_LABELLED: "labelled source volumes (images with <prefix>_labels files)",
    EARLY_HEAD: "a model bundle with an early-feature head",
    PRIOR: "a class-ratio prior (from the model bundle, or given by you)",
    INTERNALS: "a model bundle with its weights (a TorchScript file hides the network's "
               "internals)",
    INTENSITY_REFERENCE: "a model bundle that records its source intensity percentiles "
                         "(models trained with `uda train-source` do)",
}


@dataclass
class Batch:
    """One training batch on the model grid. Shapes: images (B, 1, X, Y) float32;
    positions (B,) normalised slice positions in 0..1; source_labels (B', X, Y) int64."""

    target: torch.Tensor
    positions: torch.Tensor
    paired_source: torch.Tensor | None = None
    source: torch.Tensor | None = None
    source_labels: torch.Tensor | None = None


#: What a method's `step` takes: :class:`Batch` for segmentation methods,
#: :class:`uda_core.methods.batches.RegBatch` for registration ones.
BatchT = TypeVar("BatchT")


class AdaptationMethod(Generic[BatchT]):
    """Base class, generic over the batch `step` takes (``AdaptationMethod[Batch]`` for
    segmentation). Subclasses set the class attributes and implement `setup` and `step`."""

    name: ClassVar[str]
    summary: ClassVar[str]                  # one line, shown in lists
    config_class: ClassVar[type]            # a dataclass with documented defaults
    needs: ClassVar[tuple[str, ...]] = (TARGET, INTERNALS)
    #: Data the method uses when given but can do without (ddm: labelled source slices for
    #: its "labels" anchor). A run given data in neither `needs` nor here still reads,
    #: co-registers and batches it for nothing; the app passes only what these two name.
    optional_needs: ClassVar[tuple[str, ...]] = ()
    uses_gradients: ClassVar[bool] = True
    default_steps: ClassVar[int] = 300        # the run's budget when the user gives none
    #: Label-free scores (uda_core.scores.label_free.HIGHER_IS_BETTER names) that the method's
    #: own loss optimises, directly or through a term: the engine never chooses checkpoints
    #: by them (a score the run optimises rises while the run fails).
    circular_scores: ClassVar[tuple[str, ...]] = ()
    #: Shown as experimental (in help texts, the app's list and the benchmark) with this
    #: reason when it does not beat source-only on validation subjects; "" otherwise.
    experimental: ClassVar[str] = ""
    #: The run prepares its targets with the standardised bundle (intensity quantile matching
    #: to the source, uda_core.models.standardise) whatever the user asked.
    standardises_input: ClassVar[bool] = False
    #: True for a method tested on the random 3D patches a 3D network adapts on
    #: (uda_core.tasks.segmentation_patches); the others need a 2D (slice) network.
    adapts_3d: ClassVar[bool] = False
    #: False for a method whose steps change no weight (standardise): keeping step 0 is then
    #: no verdict on the adaptation, and the run says so.
    changes_weights: ClassVar[bool] = True
    #: The engine's select_by when the user gives none: "auto" (a label-free score the
    #: method's loss does not optimise), or "last" for a method whose single step was chosen
    #: on validation subjects because no label-free score judges it (blend).
    default_select_by: ClassVar[str] = "auto"

    def __init__(self, network: torch.nn.Module, bundle: Any, config: Any,
                 device: torch.device) -> None:
        self.network = network
        self.bundle = bundle
        self.config = config
        self.device = device
        self.optimisers: list[torch.optim.Optimizer] = []

    @classmethod
    def unmet_model_needs(cls, bundle: Any) -> list[str]:
        """What `bundle` lacks for this method beyond the declared `needs`, one description
        each (missing-needs messages, method lists); the default asks nothing more."""
        return []

    @classmethod
    def check_settings(cls, config: Any, bundle: Any) -> None:
        """ValueError naming the setting when `config` cannot work with `bundle` (choices,
        class counts), before any data is read; the default checks nothing."""

    @classmethod
    def wrap_network(cls, network: torch.nn.Module, bundle: Any, config: Any,
                     device: torch.device) -> torch.nn.Module:
        """The network the run adapts, made from the bundle's `network` before the method is
        built (blend: the network and its guide; the default: `network` itself). Step 0 of
        the wrapped network must compute what `network` does."""
        return network

    def setup(self) -> None:
        """Choose trainable parameters and build `self.optimisers`."""

    def train_mode(self) -> None:
        """Set module modes for updates (default: the whole network in train mode, so
        BatchNorm uses target batch statistics)."""
        self.network.train()

    def inference_mode(self) -> None:
        """Set module modes for scoring and prediction (default: eval)."""
        self.network.eval()

    def step(self, batch: BatchT) -> dict[str, float]:
        """One update on `batch`; returns each loss term by name (plain floats)."""
        raise NotImplementedError

    def update(self, loss: torch.Tensor, *optimisers: torch.optim.Optimizer) -> None:
        """One gradient update on `loss`: zero the gradients, backpropagate, step `optimisers`
        (default: all of ``self.optimisers``). The one place methods do this; under torchrun
        the gradients are averaged over the processes before the step
        (uda_core.models.distributed)."""
        chosen = optimisers or tuple(self.optimisers)
        for optimiser in chosen:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients([p for o in chosen for g in o.param_groups for p in g["params"]])
        for optimiser in chosen:
            optimiser.step()

    def finish(self) -> None:
        """Called once after the run with the chosen weights restored (e.g. set BatchNorm
        momentum back)."""

    def on_rollback(self) -> None:
        """After a collapse rolled the weights back: halve every learning rate."""
        for optimiser in self.optimisers:
            for group in optimiser.param_groups:
                group["lr"] *= 0.5

    def extra_state(self) -> dict[str, Any]:
        """Optimiser state for checkpoints (tensors and builtins only)."""
        return {"optimisers": [o.state_dict() for o in self.optimisers]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""
        for optimiser, saved in zip(self.optimisers, state.get("optimisers", []), strict=False):
            optimiser.load_state_dict(saved)

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Modules besides the network that training changes (e.g. a discriminator)."""
        return {}


def config_from_dict(config_class: type, values: dict[str, Any] | None) -> Any:
    """A config dataclass from a dict (e.g. a settings file), refusing with a ValueError that
    names the setting: unknown keys (with the list of known ones), values of the wrong type
    (a string for a number, a float for a count, ...), NaN or infinite numbers, a learning
    rate (``lr``, ``*_lr``) that is not positive and a weight (``lambda_*``, ``*_weight``)
    that is negative. (Choices such as select_by are checked where they are used.)"""
    values = dict(values or {})
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(config_class)
    for name, value in values.items():
        _check_setting(name, hints.get(name), value)
    return config_class(**values)


def _check_setting(name: str, hint: Any, value: Any) -> None:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if not optional:
            raise ValueError(f"{name} needs a value (got null)")
        return
    if base is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value!r}")
    if base is str and not isinstance(value, str):
        raise ValueError(f"{name} must be text, not {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (name == "lr" or name.endswith("_lr")) and value <= 0:
            raise ValueError(f"{name} (a learning rate) must be > 0, not {value!r}")
        if (name.startswith("lambda_") or name.endswith("_weight")) and value < 0:
            raise ValueError(f"{name} (a weight) must be >= 0, not {value!r}")


def set_trainable(module: torch.nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)
