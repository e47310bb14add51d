"""Image modalities by name: the canonical names and a guess from a file name.

Canonical names (BIDS suffixes): ``"T1w"``, ``"T2w"``, ``"PDw"``, ``"FLAIR"``. Accepted
spellings (case-insensitive): t1, t1w, mprage, spgr -> T1w; t2, t2w -> T2w; pd, pdw -> PDw;
flair -> FLAIR. The guess reads the tokens of a file name split at ``_``, ``-`` and ``.``
(``sub-101_pd.nii.gz`` -> PDw, ``sub-01_T2w.nii.gz`` -> T2w); it is a guess, so callers let the
user name the modality instead.
"""

from __future__ import annotations

import re
from os import PathLike

__all__ = ["MODALITIES", "canonical_modality", "modality_from_path"]

MODALITIES = ("T1w", "T2w", "PDw", "FLAIR")
_SPELLINGS = {"t1": "T1w", "t1w": "T1w", "mprage": "T1w", "spgr": "T1w",
              "t2": "T2w", "t2w": "T2w", "pd": "PDw", "pdw": "PDw", "flair": "FLAIR",
              "pd/flair-like": "PDw"}


def canonical_modality(name: str | None) -> str | None:
    """The canonical name of a modality spelling, or None when it is not one we know."""
    if not name:
        return None
    return _SPELLINGS.get(str(name).strip().lower())


def modality_from_path(path: str | PathLike | None) -> str | None:
    """The modality named by one token of a file name (the last such token), or None."""
    if path is None:
        return None
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    found = [canonical_modality(token) for token in re.split(r"[_\-.]", name)]
    found = [f for f in found if f]
    return found[-1] if found else None
