"""`uda bench`: adaptation methods against source-only and an oracle on the demo shifts.

    from uda_core.bench import BenchConfig, quick_config, run_benchmark, render_markdown
    result = run_benchmark(quick_config())
    print(render_markdown(result, "uda bench --quick"))

runner.py runs it (demo data, source-only, oracle, each adaptation in a fresh process, the
engine-overhead measurement); report.py turns the numbers into the BENCHMARKS.md section,
its recorded expectations and the plot; children.py holds the work done in child processes.
"""

from uda_core.bench.report import (
    END_MARKER,
    START_MARKER,
    claims,
    render_markdown,
    replace_section,
    update_benchmarks_file,
    write_plot,
)
from uda_core.bench.runner import (
    BENCH_METHODS,
    BENCH_SHIFTS,
    BenchConfig,
    BenchResult,
    quick_config,
    run_benchmark,
)

__all__ = ["BENCH_METHODS", "BENCH_SHIFTS", "END_MARKER", "START_MARKER", "BenchConfig",
           "BenchResult", "claims", "quick_config", "render_markdown", "replace_section",
           "run_benchmark", "update_benchmarks_file", "write_plot"]
