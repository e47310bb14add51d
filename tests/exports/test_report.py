"""The run report: report.png and report.md from a finished run folder."""

from __future__ import annotations

import json
import struct

from tests.conftest import blob_volume, write_nifti
from uda_core.exports.report import figure_panels, read_metrics, trailing_mean, write_run_report
from uda_core.runs.adapt import run_adaptation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; fails on anything but a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def tiny_run(tmp_path, bundle_path, **engine):
    targets = [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(seed=i)) for i in range(2)]
    settings = {"steps": 4, "batch_size": 2, "score_every": 2, "select_by": "last", **engine}
    return run_adaptation(bundle_path, "tent", targets, tmp_path / "run", device="cpu",
                          engine_settings=settings, save_masks=False)


def test_a_finished_run_has_a_png_and_a_markdown_report(tmp_path, tiny_bundle_path):
    summary = tiny_run(tmp_path, tiny_bundle_path)
    out = tmp_path / "run"
    assert summary["report"] == {"png": str(out / "report.png"), "md": str(out / "report.md")}
    assert json.loads((out / "run.json").read_text())["report"] == summary["report"]
    width, height = png_size(out / "report.png")
    assert width > 300 and height > 300
    text = (out / "report.md").read_text()
    assert "# Adaptation report: tent" in text
    assert "| Chosen step | 4 (by `last`) |" in text
    assert "| Status | completed (4 of 4 steps) |" in text
    assert "- `adapted.pt`" in text and "engine.batch_size" in text

    (out / "report.png").unlink()
    (out / "report.md").unlink()
    written = write_run_report(out)  # again, from run.json alone
    assert written == {"png": out / "report.png", "md": out / "report.md"}
    assert png_size(written["png"])[0] == width
    assert "# Adaptation report: tent" in written["md"].read_text()


def _write_metrics(path, with_reference: bool) -> None:
    rows = [{"step": 0, "score/entropy": 0.5, "score/consistency": 0.8, "selection": 0.8,
             "best": True}]
    rows += [{"step": s, "time_s": 0.1 * s, "loss/entropy": 1.0 / s, "loss/total": 2.0 / s}
             for s in range(1, 11)]
    rows += [{"step": 10, "score/entropy": 0.3, "score/consistency": 0.9, "selection": 0.9,
              "best": True}]
    if with_reference:
        rows[0]["reference/dice"] = 0.6
        rows[-1]["reference/dice"] = 0.7
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _summary() -> dict:
    return {"status": "completed", "method": "sfda", "model": "demo:brain-t1", "steps_done": 10,
            "chosen_step": 10, "selected_by": "consistency", "targets": ["a.nii.gz"],
            "engine_config": {"steps": 10, "score_every": 10}, "method_config": {"lr": 1e-4},
            "seconds": 2.0, "steps_per_second": 5.0, "masks": []}


def test_reference_rows_add_a_dice_panel(tmp_path):
    heights = {}
    for with_reference in (False, True):
        out = tmp_path / str(with_reference)
        out.mkdir()
        _write_metrics(out / "metrics.jsonl", with_reference)
        series = read_metrics(out / "metrics.jsonl")
        assert [name for name, _ in figure_panels(series)] == (
            ["losses", "scores", "reference"] if with_reference else ["losses", "scores"])
        written = write_run_report(out, _summary())
        heights[with_reference] = png_size(written["png"])[1]
        text = written["md"].read_text()
        assert ("dice (reference labels)" in text) == with_reference
        assert "`consistency` at step 0: 0.8; at step 10: 0.9" in text
    assert heights[True] > heights[False]


def test_read_metrics_keeps_the_last_run_and_skips_broken_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([
        '{"step": 0, "score/entropy": 0.9, "best": true}',
        '{"step": 1, "loss/entropy": 5.0}',
        '{"step": 0, "score/entropy": 0.8, "best": true}',   # a second run appended
        '{"step": 1, "loss/entropy": 1.5, "time_s": 0.2}',
        '{"step": 2, "rollback_to": 0, "reason": "class 1 vanished"}',
        '{"step": 2, "loss/ent',                              # cut short by a crash
    ]) + "\n")
    assert read_metrics(path) == {"score/entropy": [(0, 0.8)], "loss/entropy": [(1, 1.5)],
                                  "time_s": [(1, 0.2)], "rollback_to": [(2, 0.0)]}


def test_trailing_mean_averages_each_value_with_those_before_it():
    assert trailing_mean([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert trailing_mean([2.0, 4.0], 1).tolist() == [2.0, 4.0]
