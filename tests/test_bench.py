"""`uda bench`: the quick benchmark end to end, and its report (table, claims, plot, file)."""

from __future__ import annotations

import math

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


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    """The quick benchmark, run once for the module (about 30 s on 2 CPU cores)."""
    work = tmp_path_factory.mktemp("bench-work")
    lines: list[str] = []
    result = run_benchmark(quick_config(work_dir=work), log=lines.append)
    return result, lines, work


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
    result, lines, _ = quick_result
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
    result, _, _ = quick_result
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

    result, _, _ = quick_result
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
    result, _, work = quick_result
    lines: list[str] = []
    again = run_benchmark(quick_config(work_dir=work, reuse=True, overhead_steps=0),
                          log=lines.append)
    assert sum("reusing" in line for line in lines) == 4  # data, oracle, tent, adabn
    before, after = result.shifts["protocol"], again.shifts["protocol"]
    assert [m.dice for m in after.methods] == [m.dice for m in before.methods]
    assert [m.wall_s for m in after.methods] == [m.wall_s for m in before.methods]
    assert after.oracle.scores.dice == before.oracle.scores.dice
    assert again.overhead is None


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
