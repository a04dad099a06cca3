"""The bench framework: suite interface, discovery, result record, JSON and PNG output."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from matplotlib.image import imread

from bench.cli import write_record
from bench.framework import (
    RESULT_SCHEMA,
    BenchError,
    Suite,
    SuiteContext,
    SuiteResult,
    discover_suites,
    parse_params,
    run_suite,
    unique_stem,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)  # decodes the whole image: a truncated or corrupt file raises
    height, width = pixels.shape[:2]
    assert height > 200 and width > 400


def counting_suite_run(ctx: SuiteContext) -> SuiteResult:
    """A tiny real workload: count to n, advancing a progress task, reporting what it did."""
    n = ctx.param("n", 50)
    task = ctx.task("counting", total=n)
    total = 0
    for i in range(n):
        total += i
        task.advance()
    ctx.log(f"counted to {n}")
    (ctx.workdir / "scratch.txt").write_text(str(total))
    return SuiteResult(
        figures={"sum": float(total), "latency": 2.5},
        units={"sum": "count", "latency": "ms", "progress": "items"},
        series={"progress": [(float(i), float(i * i)) for i in range(5)]},
        ratios={"ours/reference": 1.5},
        targets={"sum": 100.0, "latency": 2.0},
        lower_is_better={"latency"},
        notes=[f"scratch in workdir: {(ctx.workdir / 'scratch.txt').read_text()}"],
    )


COUNTING = Suite(name="counting", description="counts", run=counting_suite_run, params={"n": "how far"})


def test_run_and_write_produces_complete_json_and_png(tmp_path: Path) -> None:
    record = run_suite(COUNTING, quick=True, params={"n": "20"}, results_dir=tmp_path)
    json_path, png_path = write_record(record, tmp_path)

    data = json.loads(json_path.read_text())
    assert json_path.name.startswith("counting-") and json_path.suffix == ".json"
    assert png_path == json_path.with_suffix(".png")
    assert data["schema"] == RESULT_SCHEMA
    assert data["suite"] == "counting" and data["quick"] is True and data["params"] == {"n": "20"}
    assert data["figures"] == {"sum": 190.0, "latency": 2.5}
    assert data["units"]["sum"] == "count"
    assert data["series"] == {"progress": [[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [3.0, 9.0], [4.0, 16.0]]}
    assert data["ratios"] == {"ours/reference": 1.5}
    assert data["targets"] == {"sum": 100.0, "latency": 2.0}
    # sum 190 ≥ 100 is met; latency 2.5 ms with "lower is better" and target 2.0 is not.
    assert data["targets_met"] == {"sum": True, "latency": False}
    assert data["notes"] == ["scratch in workdir: 190"]
    assert data["log"] == ["counted to 20"]
    assert data["plot"] == png_path.name
    machine = data["machine"]
    expected_keys = {
        "cpu_model",
        "cpu_count",
        "memory_total_bytes",
        "kernel",
        "python",
        "packages",
        "git",
        "date",
    }
    assert expected_keys <= set(machine)
    assert machine["python"].startswith("3.")
    assert machine["packages"]["sipmessage"]
    assert machine["memory_total_bytes"] > 0
    assert_valid_png(png_path)


def test_async_suite_is_awaited(tmp_path: Path) -> None:
    async def run(ctx: SuiteContext) -> SuiteResult:
        return SuiteResult(figures={"answer": 42.0})

    record = run_suite(Suite("async", "async run", run), quick=False, params={}, results_dir=tmp_path)
    assert record.result.figures == {"answer": 42.0}


def test_figures_without_series_plot_as_bars(tmp_path: Path) -> None:
    def run(ctx: SuiteContext) -> SuiteResult:
        return SuiteResult(
            figures={"a": 3.0, "b": 1200.0, "c": 0.004},
            units={"a": "ms", "b": "calls/s", "c": "ms"},
            targets={"b": 1000.0},
        )

    record = run_suite(Suite("bars", "bars only", run), quick=True, params={}, results_dir=tmp_path)
    _, png_path = write_record(record, tmp_path)
    assert_valid_png(png_path)


def test_two_runs_in_the_same_second_never_overwrite(tmp_path: Path) -> None:
    record = run_suite(COUNTING, quick=True, params={}, results_dir=tmp_path)
    first, _ = write_record(record, tmp_path)
    second, _ = write_record(record, tmp_path)
    assert first != second and first.exists() and second.exists()
    assert unique_stem(tmp_path, record.stem) == f"{record.stem}-3"


def test_workdir_is_temporary(tmp_path: Path) -> None:
    seen: list[Path] = []

    def run(ctx: SuiteContext) -> SuiteResult:
        seen.append(ctx.workdir)
        assert ctx.workdir.is_dir()
        return SuiteResult()

    run_suite(Suite("tmp", "tmp", run), quick=True, params={}, results_dir=tmp_path)
    assert not seen[0].exists()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (SuiteResult(figures={"x": math.nan}), "finite"),
        (SuiteResult(figures={"x": 1.0}, targets={"y": 2.0}), "names no figure"),
        (SuiteResult(figures={"x": 1.0}, lower_is_better={"z"}), "names no figure"),
        (SuiteResult(series={"s": [(0.0, math.inf)]}), "bad point"),
    ],
)
def test_dishonest_results_are_refused_with_the_suite_named(
    tmp_path: Path, result: SuiteResult, message: str
) -> None:
    suite = Suite("bad", "bad", lambda ctx: result)
    with pytest.raises(ValueError, match=rf"suite 'bad': .*{message}"):
        run_suite(suite, quick=True, params={}, results_dir=tmp_path)


def test_a_run_returning_something_else_is_refused(tmp_path: Path) -> None:
    suite = Suite("wrong", "wrong", lambda ctx: {"figures": {}})  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="expected SuiteResult"):
        run_suite(suite, quick=True, params={}, results_dir=tmp_path)


def test_unknown_param_is_refused_when_the_suite_declares_its_params(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"no parameter rate .*known: n"):
        run_suite(COUNTING, quick=True, params={"rate": "5"}, results_dir=tmp_path)


def test_param_conversion_follows_the_default_type(tmp_path: Path) -> None:
    ctx = SuiteContext(
        quick=True,
        params={"i": "7", "f": "0.5", "b": "yes", "s": "x", "bad": "seven"},
        results_dir=tmp_path,
        workdir=tmp_path,
    )
    assert ctx.param("i", 1) == 7
    assert ctx.param("f", 1.0) == 0.5
    assert ctx.param("b", False) is True
    assert ctx.param("s", "y") == "x"
    assert ctx.param("absent", 3) == 3
    with pytest.raises(BenchError, match=r"--param bad='seven' is not a valid int"):
        ctx.param("bad", 1)
    undecided = SuiteContext(quick=True, params={"b": "maybe"}, results_dir=tmp_path, workdir=tmp_path)
    with pytest.raises(BenchError, match="not a valid bool"):
        undecided.param("b", True)


def test_progress_task_counts_without_a_display(tmp_path: Path) -> None:
    ctx = SuiteContext(quick=True, params={}, results_dir=tmp_path, workdir=tmp_path)
    task = ctx.task("work", total=10)
    task.advance()
    task.advance(2)
    assert task.completed == 3
    task.finish()
    assert task.completed == 10


def test_parse_params() -> None:
    assert parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(BenchError, match="KEY=VALUE"):
        parse_params(["novalue"])
    with pytest.raises(BenchError, match="KEY=VALUE"):
        parse_params(["=1"])


def test_discovery_finds_suites_and_reports_broken_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fake_bench_suites_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(
        textwrap.dedent(
            """
            from bench.framework import Suite, SuiteResult
            SUITE = Suite(name="good-one", description="d", run=lambda ctx: SuiteResult())
            """
        )
    )
    (package / "helper.py").write_text("VALUE = 1\n")  # no SUITE: not a suite, not an error
    (package / "broken.py").write_text("import does_not_exist_anywhere\n")
    (package / "wrongtype.py").write_text("SUITE = 'nope'\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    discovery = discover_suites("fake_bench_suites_pkg")

    assert list(discovery.suites) == ["good-one"]
    assert "ModuleNotFoundError" in discovery.broken["fake_bench_suites_pkg.broken"]
    assert "not a bench.framework.Suite" in discovery.broken["fake_bench_suites_pkg.wrongtype"]
    assert "fake_bench_suites_pkg.helper" not in discovery.broken


def test_real_suites_are_discovered() -> None:
    discovery = discover_suites()
    assert "sip-parse" in discovery.suites
    assert discovery.broken == {}
