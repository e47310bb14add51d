"""Plain labels for the settings of the engine and of every method, for forms and help.

The code names (``lambda_ent``, ``prior_floor``) stay the keys of configs and JSON files;
people read these labels, and the code name only in a tooltip. A field missing here gets a
label spelt out from its name (:func:`field_label`).
"""

from __future__ import annotations

FIELD_LABELS: dict[str, str] = {
    # engine
    "steps": "Training steps",
    "batch_size": "Slices per step",
    "skip_empty_slices": "Skip slices outside the head",
    "score_every": "Check quality every (steps)",
    "score_slices": "Slices used for the quality check",
    "checkpoint_every": "Save progress every (steps)",
    "preview_every": "Refresh masks every (steps)",
    "select_by": "Quality measure that picks the result",
    "min_gain": "Least improvement to accept a change",
    "guard_by": "Safety measures, comma-separated (each must not drop)",
    "guard_tolerance": "Allowed drop of a safety measure",
    "patience": "Stop after checks without improvement",
    "collapse_guard": "Undo steps that lose a tissue class",
    "max_rollbacks": "Give up after this many undos",
    "amp": "Faster mixed precision on a GPU",
    "seed": "Random seed",
    # shared by methods
    "lr": "Learning rate",
    "weight_decay": "Weight decay",
    "momentum": "Momentum",
    "params": "Parts of the network trained",
    "batch_statistics": "Use your scans' brightness statistics",
    # sfda
    "lambda_ent": "Weight of prediction confidence",
    "lambda_kl": "Weight of expected tissue shares",
    "background_weight": "Weight of the background",
    "prior_mode": "Expected tissue shares from",
    "user_prior": "Your tissue shares",
    "prior_floor": "Smallest tissue share allowed",
    "kl_region": "Tissue shares measured over",
    # adabn
    "momentum_after": "Statistics momentum after the run",
    # ddm
    "lambda_match": "Weight of agreement between the pair",
    "divergence": "Measure of disagreement",
    "anchor": "What keeps the T1-weighted answer right",
    "anchor_weight": "Weight of that anchor",
    "detach_source_branch": "Keep the T1-weighted answer fixed",
    "target_bn_stats": "Brightness statistics from your scans only",
    # adaptsegnet
    "lambda_adv": "Weight of the adversarial term",
    "gan": "Adversarial loss",
    "segmenter_optimiser": "Optimiser",
    "segmenter_lr": "Learning rate",
    "disc_lr": "Discriminator learning rate",
    "disc_betas": "Discriminator Adam betas",
    "disc_channels": "Discriminator width",
    "poly_power": "Learning-rate decay power",
    "total_steps": "Steps the decay spans",
    "source_label": "Discriminator label of source scans",
    "target_label": "Discriminator label of your scans",
    # early
    "detach_pseudo_labels": "Keep the final answer fixed",
    "update_all_bn_stats": "Update all brightness statistics",
    # selftrain
    "ema_decay": "Teacher memory (averaging)",
    "n_intensity_views": "Brightness variants the teacher sees",
    "flips": "Mirror images the teacher sees",
    "view_scale": "Brightness scaling of those variants",
    "view_shift": "Brightness shift of those variants",
    "confidence": "Least confidence to learn from a pixel",
    "class_quantile": "Drop each tissue's least sure share",
    "balance_classes": "Balance tissues by their share",
    "max_class_weight": "Largest tissue weight",
    "max_gamma": "Largest gamma change (student)",
    "contrast_range": "Contrast change (student)",
    "noise_std": "Noise added (student)",
    "blur_prob": "Share of slices blurred (student)",
    "max_blur_sigma": "Largest blur (pixels, student)",
    "use_teacher_at_end": "Keep the averaged (teacher) network",
    "guide": "Guide model (file or demo:brain-t1-robust)",
    "guide_weight": "Weight of the guide's answers",
    "agreement_floor": "Networks agree below this: use the guide alone",
    "lost_guide_weight": "Weight of the guide when the networks disagree",
}

# Words of code names spelt out when a field has no label above.
_WORDS = {"lr": "learning rate", "kl": "KL", "bn": "BatchNorm", "ent": "entropy",
          "adv": "adversarial", "disc": "discriminator", "amp": "mixed precision",
          "gan": "GAN", "lambda": "weight of", "ddm": "DDM"}


def field_label(name: str) -> str:
    """The plain label of a setting: FIELD_LABELS, else its name spelt out
    ("warmup_steps" -> "Warmup steps")."""
    if name in FIELD_LABELS:
        return FIELD_LABELS[name]
    text = " ".join(_WORDS.get(w, w) for w in name.split("_") if w)
    return text[:1].upper() + text[1:]
