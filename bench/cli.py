"""``uc-edge bench``: list the suites, run one with a progress bar, print and record its figures."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.framework import (
    DEFAULT_RESULTS_DIR,
    BenchError,
    RunRecord,
    discover_suites,
    parse_params,
    prepare_results_dir,
    run_suite,
    unique_stem,
)
from bench.plot import plot_record

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uc-edge bench",
        description="Run uc-edge benchmark suites; each run writes a JSON result and a PNG plot.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run}")
    commands.add_parser("list", help="list the available suites and their parameters")
    run = commands.add_parser(
        "run",
        help="run one suite",
        description="Run SUITE, print its figures and write <suite>-<UTC timestamp>.json/.png.",
    )
    run.add_argument("suite", metavar="SUITE", help="suite name, as shown by `uc-edge bench list`")
    run.add_argument("--quick", action="store_true", help="short run (smoke test; figures are rough)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="suite parameter; repeat for several (see `uc-edge bench list`)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        metavar="DIR",
        help=f"directory for the JSON and PNG (default: {DEFAULT_RESULTS_DIR})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse has printed why; report, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Console()
    err = Console(stderr=True)
    try:
        if args.command == "list":
            return _list(out)
        return _run(args, out, err)
    except BenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return EXIT_USAGE


def _list(out: Console) -> int:
    discovery = discover_suites()
    table = Table(title="benchmark suites", show_lines=False)
    table.add_column("suite", style="bold")
    table.add_column("description")
    table.add_column("parameters")
    for suite in discovery.suites.values():
        params = "\n".join(f"{name}: {help_}" for name, help_ in suite.params.items())
        table.add_row(suite.name, suite.description, params or "-")
    out.print(table)
    for module, why in discovery.broken.items():
        out.print(f"[yellow]skipped {module}[/]: {why}", highlight=False)
    return EXIT_OK


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    discovery = discover_suites()
    suite = discovery.suites.get(args.suite)
    if suite is None:
        known = ", ".join(discovery.suites) or "none"
        broken = [m for m in discovery.broken if m.rsplit(".", 1)[-1] == args.suite]
        hint = f" (module {broken[0]} failed to load: {discovery.broken[broken[0]]})" if broken else ""
        raise BenchError(f"unknown suite {args.suite!r}{hint}; available: {known}")
    params = parse_params(args.param)
    results_dir = prepare_results_dir(args.out)

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    mode = "quick" if args.quick else "full"
    err.print(f"running suite [bold]{suite.name}[/] ({mode}) — {suite.description}", highlight=False)
    try:
        with progress:
            record = run_suite(
                suite,
                quick=args.quick,
                params=params,
                results_dir=results_dir,
                progress=progress,
                echo=lambda msg: progress.console.print(msg, highlight=False, markup=False),
            )
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; nothing recorded")
        return EXIT_INTERRUPTED
    except BenchError:
        raise
    except Exception as exc:
        err.print(traceback.format_exc(), highlight=False, markup=False)
        err.print(f"[bold red]suite {suite.name} failed:[/] {type(exc).__name__}: {exc}", highlight=False)
        return EXIT_FAILED

    json_path, png_path = write_record(record, results_dir)
    print_record(record, out)
    out.print(f"result: {json_path}\nplot:   {png_path}", highlight=False)
    return EXIT_OK


def write_record(record: RunRecord, results_dir: Path) -> tuple[Path, Path]:
    stem = unique_stem(results_dir, record.stem)
    json_path = results_dir / f"{stem}.json"
    png_path = results_dir / f"{stem}.png"
    plot_record(record, png_path)
    payload = record.to_json()
    payload["plot"] = png_path.name
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return json_path, png_path


def print_record(record: RunRecord, out: Console) -> None:
    result = record.result
    table = Table(title=f"{record.suite.name} ({'quick' if record.quick else 'full'})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("target", justify="right")
    table.add_column("met")
    for name, value in result.figures.items():
        target = result.targets.get(name)
        met = result.target_met(name)
        comparator = "≤" if name in result.lower_is_better else "≥"
        table.add_row(
            name,
            format_number(value),
            result.units.get(name, ""),
            f"{comparator} {format_number(target)}" if target is not None else "",
            {True: "[green]met[/]", False: "[red]not met[/]", None: ""}[met],
        )
    out.print(table)
    if result.ratios:
        ratios = Table(title="ratios")
        ratios.add_column("ratio")
        ratios.add_column("value", justify="right")
        for name, value in result.ratios.items():
            ratios.add_row(name, f"{value:.3g}x")
        out.print(ratios)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)


def format_number(value: float) -> str:
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
