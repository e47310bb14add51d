"""The demo volumes shipped in resources/demo, by domain (for `uda-studio --demo` and samples).

Layout: resources/demo/<domain>/sub-<id>_<domain>.nii.gz with sub-<id>_labels.nii.gz beside it;
domains t1 (the source), protocol, t2 (voxel-aligned with t1), pd (FLAIR-like).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uda_core.errors import InputError
from uda_core.io.resources import resources_dir

DEMO_DOMAINS = {
    "t1": "T1w, the source domain (what demo:brain-t1 was trained on)",
    "protocol": "another T1w scanner and protocol (3 T, thick slices, bias)",
    "t2": "T2w, voxel-aligned with the T1w scans of the same subjects",
    "pd": "FLAIR-like (dark CSF)",
}


@dataclass
class DemoSet:
    domain: str
    targets: list[Path]      # unlabelled target volumes of this domain
    paired: list[Path]       # the T1w scan of each target's subject (for ddm)
    reference: list[Path]    # tissue labels of each target (evaluation only)


def demo_set(domain: str = "t2") -> DemoSet:
    """The shipped demo volumes of one domain. InputError when the files are missing."""
    if domain not in DEMO_DOMAINS:
        raise InputError(f"unknown demo domain {domain!r}; choose one of "
                         f"{', '.join(DEMO_DOMAINS)}")
    folder = resources_dir() / "demo" / domain
    targets = sorted(folder.glob(f"sub-*_{domain}.nii.gz"))
    if not targets:
        raise InputError("no demo volumes here; reinstall UDA Studio or run "
                         "`uda demo-data resources/demo`", folder)
    subjects = [t.name.split("_")[0] for t in targets]
    t1 = resources_dir() / "demo" / "t1"
    return DemoSet(domain, targets,
                   paired=[t1 / f"{s}_t1.nii.gz" for s in subjects],
                   reference=[folder / f"{s}_labels.nii.gz" for s in subjects])
