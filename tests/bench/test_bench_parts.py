"""The segmentation benchmark's pure pieces: "+std" names, which methods run where, and the
scored-slices Dice of a run's metrics.jsonl."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from uda_core.bench import runner
from uda_core.bench.runner import (
    BENCH_METHODS,
    SOURCE_FREE,
    BenchConfig,
    applicable_methods,
    is_source_free,
    reference_dice,
    split_method,
    standardises,
)
from uda_core.errors import UdaError
from uda_core.methods.guide import INPUT_CONTRACT
from uda_core.models.bundle import load_model

# What missing_needs reads from a bundle: a full-featured eager model (early head, class-ratio
# prior, intensity reference; a 2D network of one input channel, on the demo models' grid
# so that the guide of "guided" takes it) and one without an intensity reference.
_DEMO = load_model("demo:brain-t1")
FULL = SimpleNamespace(torchscript=None, has_early_head=True, class_ratio_prior=[[0.25] * 4],
                       intensity_reference={"percentiles": [1, 99], "values": [0.0, 1.0]},
                       in_channels=1, **{n: getattr(_DEMO, n) for n in INPUT_CONTRACT})
NO_REFERENCE = SimpleNamespace(**{**vars(FULL), "intensity_reference": None})


def test_split_method_and_what_a_name_says():
    assert split_method("adabn+std") == ("adabn", True)
    assert split_method("sfda") == ("sfda", False)
    assert split_method("standardise") == ("standardise", False)
    assert standardises("standardise") and standardises("tent+std")
    assert not standardises("tent")
    assert is_source_free("selftrain+std") and is_source_free("early")
    assert not is_source_free("adaptsegnet") and not is_source_free("ddm")


def test_source_free_agrees_with_the_methods_needs():
    from uda_core.methods.base import PAIRED_SOURCE, SOURCE_LABELLED
    from uda_core.methods.registry import METHODS
    for base in {split_method(m)[0] for m in BENCH_METHODS}:
        needs_source = {PAIRED_SOURCE, SOURCE_LABELLED} & set(METHODS[base].needs)
        assert (base in SOURCE_FREE) == (not needs_source), base


def test_standardising_rows_run_only_on_t1w_shifts():
    config = BenchConfig(methods=("standardise", "adabn", "adabn+std", "ddm"), skip={})
    run, notes = applicable_methods(config, "t2", FULL)
    assert run == ["adabn", "ddm"]
    assert notes == ["standardise, adabn+std skipped on t2: intensity standardisation "
                     "matches histograms of the same weighting only; skipped on t2/pd"]
    run, notes = applicable_methods(config, "protocol", FULL)
    assert run == ["standardise", "adabn", "adabn+std"]       # protocol: stored as PIL
    assert len(notes) == 1 and notes[0].startswith("ddm skipped on protocol")


def test_skip_dict_and_the_needs_of_std_and_of_pairs():
    config = BenchConfig()  # the default skip dict
    run, notes = applicable_methods(config, "mprage", FULL)
    assert "early" not in run and "adaptsegnet" not in run
    assert notes[0] == "early, adaptsegnet skipped on mprage: left out to save time"
    assert "ddm" not in run and any(n.startswith("ddm skipped on mprage: its images are "
                                                 "stored on another voxel grid") for n in notes)
    assert run == ["standardise", "adabn", "adabn+std", "tent", "sfda", "sfda+std",
                   "selftrain", "selftrain+std", "guided", "guided+std", "blend", "blend+std"]
    run, notes = applicable_methods(BenchConfig(methods=("sfda", "sfda+std"), skip={}),
                                    "protocol", NO_REFERENCE)
    assert run == ["sfda"] and len(notes) == 1 and notes[0].startswith(
        "sfda+std skipped on protocol: needs ")


def test_run_benchmark_refuses_unknown_names_before_any_work():
    for bad in ("adabn+foo", "nope+std", "standardise+std"):
        with pytest.raises(UdaError):
            runner.run_benchmark(BenchConfig(methods=(bad,)), log=lambda line: None)


def _write_metrics(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_reference_dice_reads_choice_step0_and_hindsight(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    _write_metrics(metrics, [
        {"step": 0, "score/entropy": 0.3, "selection": -0.3, "best": True,
         "reference/dice": 0.70},
        {"step": 1, "time_s": 0.1, "loss/total": 1.0},
        {"step": 50, "score/entropy": 0.2, "selection": -0.2, "best": True,
         "reference/dice": 0.78},
        {"step": 100, "rollback_to": 50, "reason": "collapse"},
        {"step": 150, "score/entropy": 0.1, "selection": -0.1, "best": True,
         "reference/dice": 0.74},
    ])
    assert reference_dice(metrics, 150) == (0.74, 0.70, 0.78)
    assert reference_dice(metrics, 0) == (0.70, 0.70, 0.78)
    choice, step0, best = reference_dice(metrics, 7)          # a step never scored
    assert math.isnan(choice) and (step0, best) == (0.70, 0.78)


def test_reference_dice_without_reference_is_nan(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    _write_metrics(metrics, [{"step": 0, "score/entropy": 0.3, "best": True}])
    assert all(math.isnan(v) for v in reference_dice(metrics, 0))
    assert all(math.isnan(v) for v in reference_dice(tmp_path / "missing.jsonl", 0))


def test_a_spawned_child_reports_its_own_peak_memory_not_its_parents():
    import multiprocessing

    import numpy as np

    from uda_core.bench.children import peak_rss_mb

    big = np.ones(40_000_000)              # 305 MB in this process
    parent = peak_rss_mb()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(peak_rss_mb)
    del big
    assert parent is not None and child is not None
    assert 0 < child < parent - 200
