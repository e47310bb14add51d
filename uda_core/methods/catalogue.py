"""Method names and one-line summaries, importable without torch (for help texts and menus).

The method classes read their `summary` from here, so each line is written once.
"""

#: The methods that adapt a 3D network too, on random 3D patches of its window (the classes
#: with ``adapts_3d``: uda_core.methods.registry.PATCH_METHODS, checked equal by a test).
ADAPTS_3D: tuple[str, ...] = ("sfda", "tent", "adabn", "ddm", "selftrain")

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
    "standardise": "Intensity standardisation: each scan's bias field removed (N4) and its "
                   "histogram matched to the source training data's, no training (for "
                   "another scanner of the same weighting)",
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
    "guided": "Source-free self-training on the pseudo-labels of a contrast-robust guide "
              "model (demo:brain-t1-robust; models on the demo grid and classes)",
    "blend": "Source-free, no training: the network's class probabilities mixed with a "
             "contrast-robust guide's (demo:brain-t1-robust; models on the demo grid and "
             "classes)",
}

#: One line per method in a clinician's words: what it does to the scans or the network and
#: what the user must give it (the app's method list; SUMMARIES names the papers).
CLINICAL: dict[str, str] = {
    "standardise": "Evens out each scan's uneven brightness and matches it to the scans "
                   "the network learnt from. No training; for another scanner of the same "
                   "weighting.",
    "sfda": "Retrains the network on your scans alone so its tissue shares look like a "
            "normal brain's. Needs only your scans.",
    "tent": "Lightly retunes the network's contrast settings on your scans alone. "
            "Needs only your scans.",
    "adabn": "Re-measures your scans' brightness statistics inside the network. No "
             "training; needs only your scans.",
    "ddm": "Teaches the network to give the same answer on your scan and the same "
           "subject's T1-weighted scan. Needs one T1-weighted scan per subject.",
    "adaptsegnet": "Trains the network until its answers on your scans look like those on "
                   "labelled scans. Needs labelled scans from the original scanner.",
    "early": "Trains the network's early layers to agree with its own final answer on "
             "your scans. Research use.",
    "selftrain": "Retrains the network on its own most confident answers on your scans. "
                 "Needs only your scans.",
    "guided": "Retrains the network on the confident answers of a second network built to "
              "cope with other scanners. Needs only your scans; brain models on the demo "
              "grid.",
    "blend": "Asks a second network built to cope with other scanners and averages its "
             "answer with your network's. No training; needs only your scans; brain "
             "models on the demo grid.",
}


def clinical_line(name: str, recommended: bool = False) -> str:
    """The method as a list shows it to a clinician: "sfda (recommended): Retrains ..."."""
    tag = " (recommended)" if recommended else " (experimental)" if name in EXPERIMENTAL else ""
    return f"{name}{tag}: {CLINICAL[name]}"
