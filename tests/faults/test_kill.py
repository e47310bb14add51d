"""SIGKILL at write moments and random times of `uda adapt`, `uda reg adapt` and `uda predict`:
what is left is complete or absent, the work finishes (--resume, or the command again) and
the result equals an uninterrupted run's exactly (same seed, one thread: the resumed run
restores weights, optimiser and method state and both random generators, so nothing is
approximate). The harness: tests/faults/harness.py; the table: scripts/fault_table.py."""

from __future__ import annotations

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
    else:   # the first mask, complete, was kept; the other two written by --skip-existing
        assert outcome.how == "skip-existing" and outcome.kept == 1


@pytest.mark.slow
@pytest.mark.parametrize("name, every, timed", harness.CAMPAIGN)
def test_many_kill_points(scenarios, name, every, timed):
    """Every `every`-th write moment of the command, plus `timed` kills at random times
    (fixed seed) within its uninterrupted wall time (>= 50 kill points in all)."""
    root, runs = scenarios
    outcomes = harness.campaign(runs[name], root, every, timed)
    failures = [f"{o.point}: torn {o.torn}; {o.difference}" for o in outcomes
                if o.torn or not (o.finished and o.equal)]
    assert not failures, failures
