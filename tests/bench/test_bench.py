"""`uda bench`: the quick benchmark end to end, and its report (table, claims, plot, file).

The benchmark tests run twice over: in the default run on a tiny source model with every
stage in this process (a few seconds), and under `-m slow` as `uda bench --quick` itself runs
(the demo model, every adaptation in a spawned child process; about a minute on 2 cores).
`test_in_child_runs_the_job_in_a_fresh_spawned_process` keeps the spawning in the default run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from uda_core.bench import (
    END_MARKER,
    START_MARKER,
    BenchResult,
    claims,
    quick_config,
    render_markdown,
    replace_section,
    run_benchmark,
    runner,
    update_benchmarks_file,
    write_plot,
)
from uda_core.bench.report import COLUMNS
from uda_core.bench.runner import (
    BenchConfig,
    MethodResult,
    OracleResult,
    Scores,
    ShiftResult,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The tiny variant: one shipped demo subject at 2 mm (resources/demo: its t1 scan trains the
# source model; its protocol scan is the target and the oracle's data), and a 4-class U-Net
# with 4 base channels on a 4 mm, 48 x 56 model grid, trained for 2 epochs; 4 slices a step.
TINY_SUBJECT = 100
TINY_SOURCE = {"spacing_mm": (4.0, 4.0, 4.0), "in_plane_shape": (48, 56), "base_channels": 4,
               "depth": 2, "epochs": 2, "head_epochs": 0, "lr": 3e-2, "batch_size": 8}
TINY_CHANGES = {"targets": (TINY_SUBJECT,), "source_subjects": (TINY_SUBJECT,),
                "oracle_train": (TINY_SUBJECT,), "oracle_val": (TINY_SUBJECT,),
                "spacing_mm": 2.0, "batch_size": 4,
                "engine_settings": {"score_slices": 4, "batch_size": 4}}


@dataclass
class QuickRun:
    """A finished quick benchmark: its result, its log lines, its work folder, and how to
    make its config (with changes) and run it again the same way."""

    result: BenchResult
    lines: list[str]
    work: Path
    changes: dict
    in_process: bool

    def config(self, **changes) -> BenchConfig:
        return quick_config(work_dir=self.work, **{**self.changes, **changes})

    def run(self, config: BenchConfig, log) -> BenchResult:
        return _run(config, log, self.in_process)


def _run(config: BenchConfig, log, in_process: bool) -> BenchResult:
    """run_benchmark, with every child job (oracle, adaptations, overhead) run in this
    process when `in_process`."""
    if not in_process:
        return run_benchmark(config, log=log)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "in_child", lambda func, job: func(job))
        return run_benchmark(config, log=log)


def _child_pid(job: dict) -> dict:
    return {"pid": os.getpid(), "job": job}


def _tiny_source(work: Path) -> str:
    """The shipped demo scans of TINY_SUBJECT (t1 and protocol, with the demo manifest, so that
    the benchmark's ensure_demo_data reuses them) copied into work/data, and a tiny source
    model trained on the t1 scan; returns the model's path."""
    import shutil

    from uda_core.io.resources import resources_dir
    from uda_core.models.bundle import save_bundle
    from uda_core.runs.train_segmentation import SourceTrainingConfig, train_source_model

    shipped, data = resources_dir() / "demo", work / "data"
    for domain in (runner.SOURCE_DOMAIN, "protocol"):
        for path in (runner._image(shipped, domain, TINY_SUBJECT),
                     runner._labels(shipped, domain, TINY_SUBJECT)):
            (data / domain).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, data / domain / path.name)
    shutil.copyfile(shipped / "manifest.json", data / "manifest.json")
    t1 = [(data / runner.SOURCE_DOMAIN / runner._image(shipped, "t1", TINY_SUBJECT).name,
           data / runner.SOURCE_DOMAIN / runner._labels(shipped, "t1", TINY_SUBJECT).name)]
    bundle, _ = train_source_model(t1, t1, SourceTrainingConfig(**TINY_SOURCE))
    return str(save_bundle(bundle, work / "tiny-source.pt"))


@pytest.fixture(scope="module", params=[
    "tiny-in-process", pytest.param("spawned", marks=pytest.mark.slow)])
def quick_result(request, tmp_path_factory) -> QuickRun:
    """The quick benchmark, run once for the module: tiny and in this process (a few seconds),
    or (slow) exactly as `uda bench --quick` runs it (about a minute on 2 CPU cores)."""
    work = tmp_path_factory.mktemp(f"bench-work-{request.param}")
    changes: dict = {}
    in_process = request.param == "tiny-in-process"
    if in_process:
        changes = {**TINY_CHANGES, "model": _tiny_source(work)}
    lines: list[str] = []
    result = _run(quick_config(work_dir=work, **changes), lines.append, in_process)
    return QuickRun(result, lines, work, changes, in_process)


def _table(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the table under `### heading`, header row first."""
    lines = markdown.splitlines()
    start = lines.index(f"### {heading}")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return [rows[0]] + rows[2:]  # drop the |---| line


def _number(cell: str) -> float:
    return float(cell.split("±")[0].replace("%", "").replace("†", "").strip())


def test_quick_benchmark_table(quick_result):
    result, lines = quick_result.result, quick_result.lines
    shift = result.shifts["protocol"]
    assert [m.method for m in shift.methods] == ["tent", "adabn"]
    assert all(not m.errors and m.steps == [3] for m in shift.methods)
    assert shift.oracle is not None, shift.notes
    assert result.overhead is not None and "error" not in result.overhead
    assert any("source only" in line for line in lines)

    markdown = render_markdown(result, "uda bench --quick", "bench.png")
    assert markdown.startswith(START_MARKER) and markdown.rstrip().endswith(END_MARKER)
    assert "    uda bench --quick" in markdown and "![Dice per method and shift](bench.png)" \
        in markdown
    table = _table(markdown, "protocol")
    assert table[0] == list(COLUMNS)
    names = [row[0] for row in table[1:]]
    assert names[:3] == ["source only", "tent", "adabn"] and names[3].startswith("oracle")
    for row in table[1:]:
        assert len(row) == len(COLUMNS)
        assert 0.0 <= _number(row[2]) <= 1.0                      # Dice before
        assert math.isfinite(_number(row[4]))                     # HD95 before (mm)
    for row in table[2:]:
        assert 0.0 <= _number(row[3]) <= 1.0                      # Dice after
        assert math.isfinite(_number(row[5]))                     # HD95 after (mm)
        assert _number(row[7]) > 0                                # wall s
        assert _number(row[9]) > 0                                # peak MB
    for row in table[2:4]:
        assert _number(row[8]) > 0                                # steps/s
    engine, bare = result.overhead["engine"], result.overhead["bare"]
    assert all(math.isfinite(v) and v > 0 for v in engine + bare)
    assert "Engine overhead" in markdown and "Expectations (recorded, not asserted)" in markdown
    assert "step chosen by the label-free score / steps run: tent " in markdown
    assert all(math.isfinite(d) for m in shift.methods for d in m.last_dice)


def test_quick_benchmark_writes_plot_and_section(quick_result, tmp_path):
    result = quick_result.result
    png = write_plot(result, tmp_path / "docs" / "bench.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert not [p for p in png.parent.iterdir() if p.name != "bench.png"]  # no temp left

    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nOther results.\n")
    section = render_markdown(result, "uda bench --quick", "docs/bench.png")
    update_benchmarks_file(markdown, section)
    update_benchmarks_file(markdown, section)  # replaced, not appended twice
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nOther results.\n")
    assert text.count(START_MARKER) == 1 and text.count(END_MARKER) == 1


def test_cli_bench_writes_only_where_told(quick_result, tmp_path, monkeypatch, capsys):
    from uda_core import cli

    result = quick_result.result
    seen = {}

    def fake_run(config, log=None):
        seen["config"] = config
        return result

    monkeypatch.setattr("uda_core.bench.run_benchmark", fake_run)
    md, png = tmp_path / "B.md", tmp_path / "img" / "b.png"
    argv = ["bench", "--quick", "--benchmarks", str(md), "--plot", str(png)]
    assert cli.main(argv) == 0
    assert seen["config"].quick and not md.exists() and not png.exists()  # quick: no writes
    assert "| tent |" in capsys.readouterr().out
    assert cli.main([*argv, "--write", "--steps", "5"]) == 0
    assert seen["config"].steps == 5
    assert "](img/b.png)" in md.read_text() and png.read_bytes()[:8] == PNG_SIGNATURE


def test_quick_benchmark_reuses_finished_runs(quick_result):
    result = quick_result.result
    lines: list[str] = []
    again = quick_result.run(quick_result.config(reuse=True, overhead_steps=0), lines.append)
    assert sum("reusing" in line for line in lines) == 4  # data, oracle, tent, adabn
    before, after = result.shifts["protocol"], again.shifts["protocol"]
    assert [m.dice for m in after.methods] == [m.dice for m in before.methods]
    assert [m.wall_s for m in after.methods] == [m.wall_s for m in before.methods]
    assert after.oracle.scores.dice == before.oracle.scores.dice
    assert again.overhead is None


def test_in_child_runs_the_job_in_a_fresh_spawned_process():
    done = runner.in_child(_child_pid, {"a": [1, 2]})
    assert done["job"] == {"a": [1, 2]} and done["pid"] != os.getpid()


def test_replace_section_appends_then_replaces():
    section = f"{START_MARKER}\nnew\n{END_MARKER}\n"
    assert replace_section("", section) == section
    appended = replace_section("# B\n", section)
    assert appended == f"# B\n\n{section}"
    old = f"# B\n\n{START_MARKER}\nold\n{END_MARKER}\n\n## after\n"
    assert replace_section(old, section) == f"# B\n\n{section}\n## after\n"


def _synthetic(dice: dict[str, dict[str, list[float]]]) -> BenchResult:
    """A BenchResult with source-only 0.5 and oracle 0.9 on each shift and the given final
    Dice per method (one value per seed)."""
    shifts = {}
    for shift, methods in dice.items():
        result = ShiftResult(shift, Scores(0.5, 8.0, partial=True),
                             OracleResult(Scores(0.9, 2.0), 60.0, 900.0, 0.91, 6))
        for name, values in methods.items():
            result.methods.append(MethodResult(
                name, list(range(len(values))), [Scores(v, 3.0) for v in values],
                [100.0] * len(values), [3.0] * len(values), [800.0] * len(values),
                [300] * len(values)))
        shifts[shift] = result
    machine = {"platform": "test", "cpu": "cpu", "cpu_count": 2, "usable_cpus": 2,
               "python": "3", "torch": "2", "threads": 2, "device": "cpu", "date": "today"}
    overhead = {"shift": "protocol", "bare": [3.0, 3.0], "engine": [2.9, 2.95], "steps": 60,
                "batch_size": 16, "score_every": 50, "score_slices": 32,
                "checkpoint_every": 50}
    return BenchResult(BenchConfig(), shifts, overhead, machine, 60.0)


def test_claims_and_gap_are_recorded_not_asserted(tmp_path):
    result = _synthetic({
        "protocol": {"sfda": [0.75], "tent": [0.6], "early": [0.45]},
        "t2": {"ddm": [0.80, 0.81, 0.82], "adaptsegnet": [0.6, 0.8, 0.7]},
    })
    found = {text: met for text, met, _ in claims(result)}
    assert found["protocol: sfda improves mean Dice over source-only"] is True
    assert found["protocol: early improves mean Dice over source-only"] is False
    assert found["protocol: sfda closes at least half of the source-only -> oracle gap"] is True
    assert found["t2 (aligned pairs): ddm closes at least 70 % of the gap"] is True
    assert found["t2: ddm beats adaptsegnet in final Dice"] is True
    assert found["t2: ddm has a smaller run-to-run spread than adaptsegnet"] is True
    assert found["engine overhead: engine steps/s >= 0.95 x a bare PyTorch loop"] is True
    markdown = render_markdown(result, "uda bench")
    t2 = _table(markdown, "t2")
    ddm = next(row for row in t2 if row[0] == "ddm")
    assert ddm[1] == "0,1,2" and ddm[3] == "0.810 ± 0.010" and ddm[6] == "78 %"
    assert "8.00 †" in markdown  # a class missing from the source-only prediction
    png = write_plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
