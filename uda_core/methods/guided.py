"""Guided self-training ("guided"): selftrain whose pseudo-labels come from a guide model.

The guide (default ``demo:brain-t1-robust``, trained with random tissue contrasts) is a
second, frozen network that survives the contrast changes that defeat a plain source model;
the adapted network is trained on the guide's view-averaged, confidence-filtered answers on
the target scans, under strong intensity changes, exactly as selftrain trains on its mean
teacher's (:mod:`uda_core.methods.selftrain`; the guide: :mod:`uda_core.methods.guide`). With
``guide_weight`` 1 the labels are the guide's alone, so the student's own errors never feed
back (selftrain's drift); the mean teacher still averages the student's weights and is what
is exported.

Defaults chosen on validation subjects 40-45 (BENCHMARKS.md, "Guided self-training"); only
models that take the guide's input (the demo models' grid, normalisation and classes) can
be guided by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uda_core.methods.catalogue import SUMMARIES
from uda_core.methods.guide import guide_mismatch
from uda_core.methods.selftrain import SelfTrain, SelfTrainConfig

DEFAULT_GUIDE = "demo:brain-t1-robust"
NO_GUIDE = (f"guided needs a guide model (guide = a bundle file or {DEFAULT_GUIDE}); "
            "selftrain runs without one")


@dataclass
class GuidedConfig(SelfTrainConfig):
    guide: str | None = DEFAULT_GUIDE  # the guide model (a bundle file or a built-in name); it
                                   # must take the adapted model's input and classes
    guide_weight: float = 1.0      # pseudo-label probabilities = w x guide + (1 - w) x mean
                                   # teacher. Validation 40-45, 100 steps (Dice of the
                                   # exported model): mprage 0.753 -> 0.798 at 1.0, 0.780 at
                                   # 0.5 (the student's own labels let CSF grow)


class Guided(SelfTrain):
    name = "guided"
    summary = SUMMARIES["guided"]
    config_class = GuidedConfig
    adapts_3d = False   # the shipped guide is a 2D network

    @classmethod
    def unmet_model_needs(cls, bundle: Any) -> list[str]:
        why = guide_mismatch(DEFAULT_GUIDE, bundle)
        return [why] if why else []

    @classmethod
    def check_settings(cls, config: Any, bundle: Any) -> None:
        if not config.guide:
            raise ValueError(NO_GUIDE)
        super().check_settings(config, bundle)

    def setup(self) -> None:
        if not self.config.guide:
            raise ValueError(NO_GUIDE)
        super().setup()
