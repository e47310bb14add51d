"""A model bundle in a clinician's words (the app's model card); :func:`describe` in
format.py keeps the technical lines (architecture, normalisation, slice axis)."""

from __future__ import annotations

from uda_core.models.bundle.format import ModelBundle

# Class and modality names as the bundles spell them -> words for people.
_CLASS_WORDS = {"csf": "cerebrospinal fluid (CSF)", "gm": "grey matter", "wm": "white matter"}
_MODALITY_WORDS = {"t1w": "T1-weighted", "t1": "T1-weighted", "t2w": "T2-weighted",
                   "t2": "T2-weighted", "pd": "proton-density", "pdw": "proton-density",
                   "flair": "FLAIR", "ct": "CT"}
_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}
_FORMATS = {"monai-bundle": "a MONAI bundle", "nnunet-v2": "an nnU-Net v2 result folder"}
_SKULL = {True: "skull-stripped scans (brain only)",
          False: "whole-head scans (no skull stripping needed)",
          None: "scans (skull stripping not recorded)"}


def modality_words(modality: str | None) -> str:
    """"T1w" -> "T1-weighted"; unknown names are returned as they are."""
    return _MODALITY_WORDS.get(str(modality or "").strip().lower(), str(modality or "MRI"))


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def plain_description(bundle: ModelBundle) -> list[str]:
    """Two or three short lines: what the network finds, on which scans, where it came from.

    >>> plain_description(load_model("demo:brain-t1"))  # doctest: +SKIP
    ['Finds cerebrospinal fluid (CSF), grey matter and white matter.',
     'Made for T1-weighted whole-head scans (no skull stripping needed), 2 mm detail.',
     'Original network (not adapted yet).']
    """
    b = bundle
    modality = modality_words(b.modality)
    detail = "x".join(dict.fromkeys(f"{s:g}" for s in b.spacing_mm))
    plane = _PLANES.get(b.slice_axis, "")
    if b.task == "registration":
        lines = [f"Aligns one scan onto another, {plane} slice by slice.",
                 f"Trained on pairs of {modality} scans of one contrast, {detail} mm detail."]
    else:
        tissues = [_CLASS_WORDS.get(n.strip().lower(), n) for n in b.class_names[1:]]
        scans = _SKULL.get(b.skull_stripped_input, _SKULL[None])
        lines = [f"Finds {_join(tissues)}." if tissues else "Finds nothing (no classes).",
                 f"Made for {modality} {scans}, {detail} mm detail."]
    prov = b.provenance or {}
    method = prov.get("method") or ""
    if method.startswith(("supervised", "import")) or not method:   # trained or imported
        lines.append("Original network (not adapted yet).")
    else:
        date = str(prov.get("date") or "")[:10]
        lines.append(f"Adapted with {method}" + (f" on {date}" if date else "") + ".")
    return lines


def network_lines(bundle: ModelBundle) -> list[str]:
    """What kind of network it is, for the card: 2D or 3D (with its window), classes and
    input channels, where it was imported from; a network that takes more than one input
    channel gets a "not supported yet" line.

    >>> network_lines(load_model("demo:brain-t1-3d"))  # doctest: +SKIP
    ['3D network: 48 x 48 x 48 voxel windows, 4 classes, 1 input channel.']
    """
    b = bundle
    if b.dims == 3 and b.window:
        kind = f"3D network: {' x '.join(str(r) for r in b.window['roi_size'])} voxel windows"
    else:
        kind = "2D network: slice by slice"
    channels = b.in_channels
    lines = [f"{kind}, {len(b.class_names)} classes, {channels} input "
             f"channel{'s' if channels != 1 else ''}."]
    if b.imported:
        imp = b.imported
        what = _FORMATS.get(str(imp.get("format")), str(imp.get("format")))
        name = f" ({imp['name']})" if imp.get("name") else ""
        lines.append(f"Imported from {what}{name}.")
    if channels != 1:
        lines.append(f"Not supported yet: {channels} input channels (UDA Studio gives the "
                     "network one scan at a time).")
    return lines
