"""5,000 engine steps with scoring, checkpoints, previews and the metrics file at their default
rates keep memory flat: under 5 % growth of the resident set from step 500 to step 5,000
(tests/faults/long_run.py; the figure: scripts/long_run_memory.py -> BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from tests.faults.long_run import long_run


def test_a_short_run_samples_memory(tmp_path):
    memory = long_run(tmp_path / "run", steps=20, sample_every=10)
    assert sorted(memory) == [1, 10, 20] and all(v > 0 for v in memory.values())
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_memory_stays_flat_over_5000_steps(tmp_path):
    memory = long_run(tmp_path / "run", steps=5000)
    growth = memory[5000] / memory[500] - 1
    assert growth < 0.05, memory
