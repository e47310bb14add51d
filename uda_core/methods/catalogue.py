"""Method names and one-line summaries, importable without torch (for help texts and menus).

The method classes read their `summary` from here, so each line is written once.
"""

# Classifier discrepancies for adapting the registration network (uda_core.methods.mcd).
REG_DISCREPANCIES: tuple[str, ...] = ("l1", "swd", "pemd")

#: Methods shown as experimental, with the measured reason (help texts, the app, the benchmark).
EXPERIMENTAL: dict[str, str] = {
    "early": "experimental: on validation subjects it fell below source-only (protocol, whole "
             "heads: 0.736 -> 0.594 in 300 steps; every variant tried fell; BENCHMARKS.md)",
}


def label(name: str) -> str:
    """The method's name as lists show it: "early (experimental)" or just the name."""
    return f"{name} (experimental)" if name in EXPERIMENTAL else name


def help_line(name: str) -> str:
    """Its one-line summary, with the experimental reason when it has one."""
    return SUMMARIES[name] + (f" [{EXPERIMENTAL[name]}]" if name in EXPERIMENTAL else "")


SUMMARIES: dict[str, str] = {
    "standardise": "Intensity standardisation: each scan's histogram matched to the source "
                   "training data's, no training (for another scanner of the same weighting)",
    "sfda": "Source-free: entropy minimisation + class-ratio prior (Bateson et al. 2020)",
    "tent": "Baseline: entropy minimisation of BatchNorm scales and shifts (Wang et al. 2021)",
    "adabn": "Baseline: re-estimate BatchNorm statistics on the target scans, no training",
    "ddm": "Direct distribution matching with paired source-modality images of the same "
           "subjects (Pichler et al. 2020)",
    "adaptsegnet": "Baseline: output-space adversarial adaptation (Tsai et al. 2018; needs "
                   "labelled source images)",
    "early": "Self-training of early features against the final output (Sheikh & Schultz 2022)",
    "selftrain": "Source-free self-training: a mean teacher's augmentation-averaged, "
                 "confidence-filtered pseudo-labels (DPL, CoTTA style)",
}
