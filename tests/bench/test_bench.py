"""`uda bench`: the quick benchmark end to end, and its report (table, claims, plot, file).

The benchmark tests run twice over: in the default run on a tiny source model with every
stage in this process (a few seconds), and under `-m slow` as `uda bench --quick` itself runs
(the demo model, every adaptation in a spawned child process; about a minute on 2 cores).
`test_in_child_runs_the_job_in_a_fresh_spawned_process` keeps the spawning in the default run.
"""

from __future__ import annotations

import json
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
    assert [m.method for m in shift.methods] == ["adabn", "adabn+std"]
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
    assert names[:3] == ["source only", "adabn", "adabn+std"] and names[3].startswith("oracle")
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
    assert "step chosen by the label-free score / steps run: adabn " in markdown
    assert all(math.isfinite(d) for m in shift.methods for d in m.last_dice)
    # the targets' labels went to every run as its reference: scored-slices Dice recorded
    for m in shift.methods:
        assert len(m.choice_dice) == len(m.hindsight_dice) == len(m.kept_source) == 1
        assert all(0.0 <= c <= h <= 1.0
                   for c, h in zip(m.choice_dice, m.hindsight_dice, strict=True))
        if m.chosen_steps == m.steps:  # chose the last step: the same weights, same input
            assert m.last_dice[0] == pytest.approx(m.dice, abs=1e-6), m.method
    assert "label-free choice vs best in hindsight (scored slices" in markdown
    std_run = quick_result.work / "runs" / "protocol" / "adabn+std-seed0" / "run.json"
    run = json.loads(std_run.read_text())   # "+std": standardised when it scores better
    assert run["standardisation"]["used"] is run["standardised"]
    assert run["standardisation"]["line"].startswith("intensities ")
    assert result.default_run is None  # the quick config times no default run


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
    assert "| adabn+std |" in capsys.readouterr().out
    assert cli.main([*argv, "--write", "--steps", "5"]) == 0
    assert seen["config"].steps == 5
    assert "](img/b.png)" in md.read_text() and png.read_bytes()[:8] == PNG_SIGNATURE


def test_quick_benchmark_reuses_finished_runs(quick_result):
    result = quick_result.result
    lines: list[str] = []
    again = quick_result.run(quick_result.config(reuse=True, overhead_steps=0), lines.append)
    assert sum("reusing" in line for line in lines) == 4  # data, oracle, 2 methods
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
    Dice per method (one value per seed); scored-slices Dice: chosen 0.70, step 0 0.60, best
    in hindsight 0.705 for every run; every run of "tent" kept the source weights."""
    shifts = {}
    for shift, methods in dice.items():
        result = ShiftResult(shift, Scores(0.5, 8.0, partial=True),
                             OracleResult(Scores(0.9, 2.0), 60.0, 900.0, 0.91, 6))
        for name, values in methods.items():
            n = len(values)
            result.methods.append(MethodResult(
                name, list(range(n)), [Scores(v, 3.0) for v in values],
                [100.0] * n, [3.0] * n, [800.0] * n, [300] * n, [], [100] * n, [0.6] * n,
                choice_dice=[0.70] * n, step0_dice=[0.60] * n, hindsight_dice=[0.705] * n,
                kept_source=[name == "tent"] * n))
        shifts[shift] = result
    machine = {"platform": "test", "cpu": "cpu", "cpu_count": 2, "usable_cpus": 2,
               "python": "3", "torch": "2", "threads": 2, "device": "cpu", "date": "today"}
    overhead = {"shift": "protocol", "volumes": 3, "bare": [3.0, 3.0], "engine": [2.9, 2.95],
                "steps": 60, "batch_size": 16, "score_every": 50, "score_slices": 32,
                "checkpoint_every": 50}
    default_run = {"method": "sfda", "shift": "protocol", "volumes": 3, "steps": 300,
                   "wall_s": 240.0}
    return BenchResult(BenchConfig(), shifts, overhead, machine, 60.0, default_run)


GOOD = {
    "protocol": {"adabn+std": [0.72], "sfda": [0.76], "tent": [0.6], "adaptsegnet": [0.8]},
    "mprage": {"standardise": [0.72], "sfda": [0.6]},
    "highfield": {"selftrain+std": [0.8], "sfda": [0.55]},
    "t2": {"ddm": [0.87, 0.88, 0.89], "sfda": [0.52]},
}


def _claims(result: BenchResult) -> dict[str, tuple[bool | None, str]]:
    return {text.split(":")[0] if text.startswith("on every") else text: (met, numbers)
            for text, met, numbers in claims(result)}


def test_claims_all_met_on_a_good_result(tmp_path):
    found = _claims(_synthetic(GOOD))
    met, numbers = found["on every T1w shift (protocol, mprage, highfield)"]
    # adaptsegnet (0.8 on protocol) needs labelled source data: not a source-free candidate
    assert met is True and numbers == ("protocol sfda 65 %, mprage standardise 55 %, "
                                       "highfield selftrain+std 75 %")
    assert found["sfda: mean Dice after > before on every shift where it ran"][0] is True
    harm = found["no method's chosen checkpoint is worse than source-only by more than "
                 "0.005 Dice on any shift"]
    assert harm == (True, "none of 10 rows")
    choice = found["the label-free choice is on average within 0.01 Dice of the best "
                   "checkpoint in hindsight (scored slices)"]
    assert choice[0] is True and choice[1].startswith("mean best - chosen 0.0050 over 12 runs")
    assert found["t2 (aligned pairs): ddm closes at least 90 % of the gap"] == (True, "95 %")
    assert found["the default run (sfda, its default steps and settings) of 3 target "
                 "volumes finishes within 5 min"][0] is True
    assert found["engine overhead: engine steps/s >= 0.95 x a bare PyTorch loop"][0] is True


def test_claims_not_met_name_the_offenders():
    bad = {**GOOD, "mprage": {"standardise": [0.6], "sfda": [0.49]},
           "pd": {"tent": [0.494]}}
    result = _synthetic(bad)
    result.default_run = {"method": "sfda", "shift": "protocol", "volumes": 3, "steps": 300,
                          "wall_s": 301.0}
    for row in result.shifts["t2"].methods:
        row.hindsight_dice = [0.75] * len(row.scores)  # the choice missed by 0.05 there
    found = _claims(result)
    assert found["on every T1w shift (protocol, mprage, highfield)"][0] is False
    assert found["sfda: mean Dice after > before on every shift where it ran"][0] is False
    harm = found["no method's chosen checkpoint is worse than source-only by more than "
                 "0.005 Dice on any shift"]
    assert harm == (False, "offenders: mprage sfda 0.490 vs 0.500, pd tent 0.494 vs 0.500")
    choice = found["the label-free choice is on average within 0.01 Dice of the best "
                   "checkpoint in hindsight (scored slices)"]
    assert choice[0] is False   # (9 x 0.005 + 4 x 0.05) / 13 = 0.019
    assert found["the default run (sfda, its default steps and settings) of 3 target "
                 "volumes finishes within 5 min"][0] is False


def test_claims_not_measured_say_so():
    result = _synthetic({"protocol": {"adaptsegnet": [0.8]}})
    result.default_run, result.overhead = None, None
    result.shifts["protocol"].oracle = None
    found = _claims(result)
    assert found["on every T1w shift (protocol)"] == (None, "protocol none n/a")
    assert found["sfda: mean Dice after > before on every shift where it ran"] == (
        None, "not run")
    assert found["t2 (aligned pairs): ddm closes at least 90 % of the gap"] == (
        None, "not run")
    default = found["the default run (the default method, its default steps and settings) "
                    "of 3 target volumes finishes within 5 min"]
    assert default == (None, "not measured in this configuration")
    assert found["engine overhead: engine steps/s >= 0.95 x a bare PyTorch loop"][0] is None


def test_report_orders_rows_and_writes_the_notes(tmp_path):
    result = _synthetic({"protocol": {"tent": [0.6], "sfda": [0.75], "adabn+std": [0.7]},
                         "t2": {"ddm": [0.80, 0.81, 0.82], "tent": [0.55]}})
    markdown = render_markdown(result, "uda bench")
    names = [row[0] for row in _table(markdown, "protocol")[1:]]
    assert names[:4] == ["source only", "adabn+std", "tent", "sfda"]
    assert names[4].startswith("oracle")
    ddm = next(row for row in _table(markdown, "t2") if row[0] == "ddm")
    assert ddm[1] == "0,1,2" and ddm[3] == "0.810 ± 0.010" and ddm[6] == "78 %"
    assert "8.00 †" in markdown  # a class missing from the source-only prediction
    assert ("label-free choice vs best in hindsight (scored slices, reference Dice; "
            "evaluation only): adabn+std 0.700/0.705 (step 0 0.600); tent") in markdown
    assert "kept the source weights (no step confidently better by the label-free score): " \
        "tent seed 0" in markdown
    assert "held-out subjects 100-105" in markdown
    png = write_plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
