"""SIGKILL at write moments and random times of `uda adapt`, `uda reg adapt` and `uda predict`:
what is left is complete or absent, the work finishes (--resume, or the command again) and
the result equals an uninterrupted run's exactly (same seed, one thread: the resumed run
restores weights, optimiser and method state and both random generators, so nothing is
approximate). The harness: tests/faults/harness.py; the table: scripts/fault_table.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.faults import harness


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return root, harness.make_scenarios(root / "data")


def _check(outcome: harness.Outcome) -> None:
    assert outcome.killed, f"{outcome.point}: the run ended before the kill"
    assert not outcome.torn, f"{outcome.point}: torn files {outcome.torn}"
    assert outcome.finished and outcome.equal, f"{outcome.point}: {outcome.difference}"


@pytest.mark.parametrize("name, spec", [
    ("adapt", "fsync checkpoints/last.pt (temporary)#2"),   # complete temporary, not in place
    ("predict", "link t1_seg.nii.gz#1"),                    # one mask written, two to go
])
def test_a_kill_leaves_complete_files_and_the_finished_work_equals_an_uninterrupted_run(
        scenarios, name, spec):
    root, runs = scenarios
    scenario = runs[name]
    reference = harness.reference_result(scenario, root / f"{name}-reference")
    outcome = harness.try_point(scenario, root / f"{name}-killed", reference, write=spec)
    _check(outcome)
    if name == "adapt":
        # the kill left last.pt's complete temporary; the resume cleared it (checked in _check)
        assert [t.split(".tmp")[0][:-13] for t in outcome.temporaries] == [
            "checkpoints/.last.pt"]
        assert outcome.how == "resume"


@pytest.mark.slow
@pytest.mark.parametrize("name, every, timed", [("adapt", 3, 6), ("reg adapt", 4, 3),
                                                 ("predict", 1, 2)])
def test_many_kill_points(scenarios, name, every, timed):
    """Every `every`-th write moment of the command, plus `timed` kills at random times
    (fixed seed) within its uninterrupted wall time: 30 + 15 + 24 kill points in all."""
    root, runs = scenarios
    scenario = runs[name]
    slug = name.replace(" ", "-")
    moments, seconds = harness.census(scenario, root / f"{slug}-census")
    reference = harness.reference_result(scenario, root / f"{slug}-reference")
    rng = np.random.default_rng(16)
    points = [{"write": str(n)} for n in range(1, len(moments) + 1, every)]
    points += [{"after_s": float(t)} for t in rng.uniform(0.5, seconds, timed)]
    failures = []
    for k, point in enumerate(points):
        outcome = harness.try_point(scenario, root / f"{slug}-{k}", reference, **point)
        if outcome.torn or not (outcome.finished and outcome.equal):
            failures.append(f"{outcome.point}: torn {outcome.torn}; {outcome.difference}")
    assert not failures, failures
