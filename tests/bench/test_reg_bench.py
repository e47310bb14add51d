"""`uda reg bench --quick` and `uda reg adapt` end to end with a tiny registration model
(conftest's `tiny_reg_model`: random weights on a 4 mm, 48 x 56 model grid)."""

from __future__ import annotations

import argparse
import json

import pytest

from uda_core.bench.registration_report import END_MARKER, START_MARKER, replace_reg_section
from uda_core.cli.reg_adapt import add_reg_adapt_parser, add_reg_bench_parser
from uda_core.models.bundle.registration import load_registration_model


def run_reg(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="uda reg")
    sub = parser.add_subparsers(dest="command", required=True)
    add_reg_adapt_parser(sub)
    add_reg_bench_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_quick_bench_writes_a_table_with_every_row(tiny_reg_model, tmp_path, capsys):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\n<!-- bench:segmentation:start -->\nseg table\n"
                          "<!-- bench:segmentation:end -->\n")
    code = run_reg(["bench", "--quick", "--model", tiny_reg_model, "--device", "cpu",
                    "--methods", "none,l1,swd,pemd,sitk,io", "--write",
                    "--benchmarks", str(benchmarks),
                    "--plot", str(tmp_path / "docs" / "reg.png")])
    out = capsys.readouterr().out
    assert code == 0
    for row in ("| before registration |", "| none |", "| mcd-l1 |", "| mcd-swd |",
                "| mcd-pemd |", "| SimpleITK |", "| io |", "| mcd-l1+io |", "| mcd-swd+io |",
                "| mcd-pemd+io |"):
        assert row in out, row
    assert "mcd-pemd+io accuracy at least SimpleITK's" in out   # the default's claim
    assert "failed" not in out
    text = benchmarks.read_text()
    assert "seg table" in text and text.count(START_MARKER) == 1 and END_MARKER in text
    assert (tmp_path / "docs" / "reg.png").stat().st_size > 0


def test_section_replacement_keeps_everything_else():
    old = f"intro\n{START_MARKER}\nold\n{END_MARKER}\noutro\n"
    new = replace_reg_section(old, f"{START_MARKER}\nnew\n{END_MARKER}\n")
    assert new == f"intro\n{START_MARKER}\nnew\n{END_MARKER}\noutro\n"
    assert replace_reg_section("intro\n", "S\n") == "intro\n\nS\n"


def test_reg_adapt_writes_bundle_metrics_run_and_resumes(tiny_reg_model, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_reg(["adapt", "--model", tiny_reg_model, "--discrepancy", "pemd", "--out",
                    str(out), "--steps", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == 2
    assert run["method"] == "mcd-pemd" and run["aligned"] is True
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/source_ce" in r] == [1, 2]
    assert any("reference/accuracy" in r for r in rows)
    bundle, _ = load_registration_model(out / "adapted.pt")
    assert bundle.provenance["method"] == "mcd-pemd"
    assert bundle.provenance["parent"].endswith("tiny_reg.pt")
    # the adapted model records the modality it was adapted on (demo domain t2)
    assert bundle.provenance["modalities"] == {"fixed": "T1w", "moving": ["T1w", "T2w"]}

    code = run_reg(["adapt", "--model", tiny_reg_model, "--out", str(out), "--steps", "3",
                    "--device", "cpu", "--resume", str(out / "checkpoints" / "last.pt")])
    assert code == 0
    assert json.loads((out / "run.json").read_text())["steps_done"] == 3


def test_reg_adapt_refuses_fixed_without_moving(tiny_reg_model, tmp_path):
    from uda_core.errors import UdaError
    with pytest.raises(UdaError, match="--moving"):
        run_reg(["adapt", "--model", tiny_reg_model, "--out", str(tmp_path / "x"),
                 "--fixed", str(tmp_path / "a.nii.gz")])


def _reg_result(table: dict[str, dict[str, tuple[float, float]]]):
    """A RegBenchResult from {shift: {method: (accuracy, warped Dice)}}; EPE and folding
    follow accuracy so SimpleITK parity reads like accuracy."""
    from uda_core.bench.registration import RegBenchConfig, RegBenchResult, RegRow
    result = RegBenchResult(config=RegBenchConfig())
    for shift, methods in table.items():
        result.rows[shift] = [
            RegRow(method, seeds=[0], scores=[{
                "accuracy": acc, "dice_after": dice, "epe_mm": 3.0 - acc, "folding": 0.0,
                "accuracy_identity": 0.18}])
            for method, (acc, dice) in methods.items()]
    return result


def test_reg_claims_cover_every_shift_and_name_a_broken_ordering():
    from uda_core.bench.registration_report import claims
    good = {"none": (0.10, 0.60), "mcd-swd": (0.15, 0.65), "mcd-pemd": (0.25, 0.70),
            "io": (0.30, 0.70), "mcd-swd+io": (0.45, 0.75), "mcd-pemd+io": (0.50, 0.80),
            "SimpleITK": (0.35, 0.76)}
    pd = dict(good, **{"mcd-swd": (0.08, 0.65)})          # swd below none in accuracy
    found = {text: (met, numbers) for text, met, numbers in
             claims(_reg_result({"t2": good, "pd": pd}))}
    order = "mcd-pemd > mcd-swd > none (networks alone) in accuracy and warped Dice"
    assert found[f"T1->T2: {order}"][0] is True
    assert found[f"T1->PD: {order}"] == (False, "accuracy 0.250 / 0.080 / 0.100, "
                                                "Dice 0.700 / 0.650 / 0.600")
    io_order = ("T1->PD: mcd-pemd+io > mcd-swd+io > io (with the instance optimisation) in "
                "accuracy and warped Dice")
    assert found[io_order][0] is True
    for shift in ("T2", "PD"):
        assert found[f"T1->{shift}: mcd-pemd+io accuracy at least SimpleITK's"][0] is True
        assert found[f"T1->{shift}: mcd-pemd+io folding <= 0.1 %"][0] is True
