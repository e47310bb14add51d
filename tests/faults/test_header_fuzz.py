"""Header fuzzing of `uda predict` (tests/faults/header_fuzz.py): seeded random mutations of
valid NIfTI / MHA / NRRD headers give a clean error line or a mask on the input grid, never a
traceback, a hang over 10 s or a crash of the interpreter."""

from __future__ import annotations

import collections

import pytest

from tests.faults import header_fuzz


def _fuzz(tmp_path, tiny_bundle_path, count):
    results = header_fuzz.run_fuzz(tmp_path / "fuzz", tiny_bundle_path, count)
    verdicts = collections.Counter(r["verdict"] for r in results)
    failures = [r for r in results if r["verdict"] not in ("error", "mask")]
    assert len(results) == count
    assert not failures, failures[:5]
    assert verdicts["error"] and verdicts["mask"]   # the mutations reach both outcomes


def test_fifty_header_mutations_give_an_error_line_or_a_mask(tmp_path, tiny_bundle_path):
    _fuzz(tmp_path, tiny_bundle_path, 50)


@pytest.mark.slow
def test_a_thousand_header_mutations(tmp_path, tiny_bundle_path):
    _fuzz(tmp_path, tiny_bundle_path, 1000)
