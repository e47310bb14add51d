"""The adaptation methods by command-line name, and what each needs before it can run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uda_core.methods.adabn import AdaBN
from uda_core.methods.adaptsegnet import AdaptSegNet
from uda_core.methods.base import (
    EARLY_HEAD,
    INTENSITY_REFERENCE,
    INTERNALS,
    NEED_DESCRIPTIONS,
    PRIOR,
    AdaptationMethod,
    Batch,
)
from uda_core.methods.blend import Blend
from uda_core.methods.ddm import DDM
from uda_core.methods.early import EarlyFeatures
from uda_core.methods.guided import Guided
from uda_core.methods.selftrain import SelfTrain
from uda_core.methods.sfda import SFDA
from uda_core.methods.standardise import Standardise
from uda_core.methods.tent import Tent
from uda_core.models.standardise import is_standardised

if TYPE_CHECKING:
    from uda_core.models.bundle import ModelBundle

METHODS: dict[str, type[AdaptationMethod[Batch]]] = {
    m.name: m for m in (Standardise, SFDA, Tent, AdaBN, DDM, AdaptSegNet, EarlyFeatures,
                        SelfTrain, Guided, Blend)}
#: the methods that adapt a 3D network (on random 3D patches)
PATCH_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.adapts_3d)


def missing_needs(method: type[AdaptationMethod[Any]], bundle: ModelBundle,
                  provided: set[str]) -> list[str]:
    """Human-readable descriptions of what `method` needs and does not have.

    provided: the data the user gave, among TARGET, PAIRED_SOURCE, SOURCE_LABELLED. What the
    model must offer (early head, prior, internals) is read from the bundle.
    """
    have = set(provided)
    if bundle.torchscript is None:
        have.add(INTERNALS)
        if bundle.has_early_head:
            have.add(EARLY_HEAD)
    if bundle.class_ratio_prior:
        have.add(PRIOR)
    if bundle.intensity_reference or is_standardised(bundle):
        have.add(INTENSITY_REFERENCE)
    missing = [NEED_DESCRIPTIONS[n] for n in method.needs if n not in have]
    if bundle.in_channels != 1:
        missing.append(f"a network with 1 input channel (this one takes "
                       f"{bundle.in_channels}: not supported yet)")
    if bundle.dims == 3 and not method.adapts_3d:
        missing.append("a 2D (slice) network; 3D networks adapt with "
                       + ", ".join(PATCH_METHODS))
    else:
        missing += method.unmet_model_needs(bundle)
    return missing

