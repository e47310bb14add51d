"""npe2 sample data: demo subject sub-100 in four simulated MRI domains, with its labels.

Files come from ``resources/demo`` (found through :func:`uda_core.io.resources.resources_dir`),
listed in its ``manifest.json``. Each sample is the image plus the reference tissue labels on
the image's own grid, both placed in the (S, P, L) mm world by :mod:`app.layers`, so they
overlay exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from uda_core.errors import InputError
from uda_core.io.readers import read_labels, read_volume
from uda_core.io.resources import resources_dir

from .layers import LayerDataTuple, image_layer, labels_layer

SUBJECT = "sub-100"
#: domain folder -> the label used in layer names
DOMAIN_TITLES = {"t1": "T1", "t2": "T2", "pd": "FLAIR-like", "protocol": "protocol shift"}


def demo_dir() -> Path:
    """The demo data folder (``<resources>/demo``)."""
    return resources_dir() / "demo"


def demo_sample(domain: str, subject: str = SUBJECT) -> list[LayerDataTuple]:
    """Image layer (+ reference labels layer when the demo has them) for one domain.

    Args:
        domain: a folder of resources/demo: "t1", "t2", "pd" or "protocol".
        subject: subject id in manifest.json, e.g. "sub-100".

    Raises:
        InputError: the manifest or a listed file is missing or unreadable.
    """
    manifest = _manifest()
    entry = next((s for s in manifest.get("subjects", []) if s.get("id") == subject), None)
    files = (entry or {}).get("files", {}).get(domain)
    if files is None:
        raise InputError(f"lists no {domain!r} volume for {subject}", demo_dir() / "manifest.json")
    title = f"{subject} {DOMAIN_TITLES.get(domain, domain)}"
    layers = [image_layer(read_volume(demo_dir() / files["image"]), title)]
    if files.get("labels"):
        labels = read_labels(demo_dir() / files["labels"])
        class_names = manifest.get("classes") or ["background", "CSF", "GM", "WM"]
        layers.append(labels_layer(labels.data, labels.affine, class_names,
                                   f"{title} reference labels",
                                   metadata={"source": labels.source}))
    return layers


def demo_t1() -> list[LayerDataTuple]:
    """Source domain: 1.5 T spin-echo T1w (what ``demo:brain-t1`` was trained on)."""
    return demo_sample("t1")


def demo_t2() -> list[LayerDataTuple]:
    """Target domain: T2w, voxel-aligned with the T1 of the same subject."""
    return demo_sample("t2")


def demo_flair() -> list[LayerDataTuple]:
    """Target domain: FLAIR-like inversion recovery (dark CSF), 1x1x3 mm."""
    return demo_sample("pd")


def demo_protocol() -> list[LayerDataTuple]:
    """Target domain: another T1w protocol (3 T, bias, thick sagittal slices, PIL storage)."""
    return demo_sample("protocol")


def _manifest() -> dict:
    path = demo_dir() / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc}); the demo data is missing "
                         "(regenerate it with `uda demo-data`)", path) from exc
    except ValueError as exc:
        raise InputError(f"is not valid JSON ({exc})", path) from exc
