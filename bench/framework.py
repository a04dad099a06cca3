"""The benchmark framework: the suite interface, suite discovery, running a suite, the result record.

A suite is a module in ``bench/suites/`` holding a module-level ``SUITE = Suite(...)``. Its ``run``
function receives a :class:`SuiteContext` and returns a :class:`SuiteResult`; it may be a plain function
or a coroutine function (run on uvloop when available, as the server runs). See ``bench/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import inspect
import math
import os
import pkgutil
import platform
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

RESULT_SCHEMA = "uc-edge-bench/1"
SUITES_PACKAGE = "bench.suites"
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Versions recorded with every result, so a figure can be traced to the stack that produced it.
KEY_PACKAGES = (
    "uc-edge",
    "sipmessage",
    "aiortc",
    "av",
    "uvloop",
    "aiohttp",
    "asyncpg",
    "aiokafka",
    "redis",
    "aiobotocore",
    "numpy",
    "opuslib",
)

T = TypeVar("T", int, float, str, bool)


class BenchError(Exception):
    """A problem the operator can fix (unknown suite, bad parameter, unwritable directory)."""


@dataclass
class SuiteResult:
    """What a suite measured.

    ``figures`` are the headline numbers, ``units`` name their units (and the y unit of a series of the
    same name), ``series`` are ``(x, y)`` points plotted as lines (x is ``x_label``, elapsed seconds by
    default), ``ratios`` compare against a reference (``"uc-edge/kamailio"``), ``targets`` map a figure
    name to the value it should reach; a figure in ``lower_is_better`` meets its target when at or below
    it, any other figure when at or above it.
    """

    figures: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lower_is_better: set[str] = field(default_factory=set)
    x_label: str = "elapsed time (s)"

    def target_met(self, figure: str) -> bool | None:
        """Whether ``figure`` meets its target; ``None`` when it has no target."""
        if figure not in self.targets:
            return None
        value, target = self.figures[figure], self.targets[figure]
        return value <= target if figure in self.lower_is_better else value >= target

    def validate(self) -> None:
        """Reject a result that cannot be recorded honestly (a suite bug, reported with its name)."""
        for name, value in {**self.figures, **self.ratios, **self.targets}.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"result value {name!r} must be a finite number, got {value!r}")
        for name in self.targets:
            if name not in self.figures:
                raise ValueError(f"target {name!r} names no figure")
        for name in self.lower_is_better:
            if name not in self.figures:
                raise ValueError(f"lower_is_better entry {name!r} names no figure")
        for name, points in self.series.items():
            for point in points:
                if len(point) != 2 or not all(math.isfinite(float(v)) for v in point):
                    raise ValueError(f"series {name!r} has a bad point {point!r}")


RunFunction = Callable[["SuiteContext"], SuiteResult | Awaitable[SuiteResult]]


@dataclass(frozen=True)
class Suite:
    """A benchmark: ``name`` (as typed on the command line), a one-line ``description``, ``run``.

    ``params`` documents the ``--param`` names the suite understands (name → help); when given, any
    other name is refused. ``packages`` adds distributions whose versions go into the result.
    """

    name: str
    description: str
    run: RunFunction
    params: dict[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()


class ProgressSink(Protocol):
    """The part of ``rich.progress.Progress`` the framework uses (so tests and quiet runs need none)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def update(self, task_id: Any, **fields: Any) -> None: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...


class ProgressTask:
    """One progress bar of a suite; counts even when nothing is displayed."""

    def __init__(self, sink: ProgressSink | None, description: str, total: float | None) -> None:
        self._sink = sink
        self.completed: float = 0.0
        self.total = total
        self._task_id = sink.add_task(description, total=total) if sink is not None else None

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self._sink is not None:
            self._sink.advance(self._task_id, n)

    def set_total(self, total: float | None) -> None:
        self.total = total
        if self._sink is not None:
            self._sink.update(self._task_id, total=total)

    def finish(self) -> None:
        """Fill the bar (for a task that ended earlier than its estimate)."""
        if self.total is not None and self.completed < self.total:
            self.advance(self.total - self.completed)


@dataclass
class SuiteContext:
    """What a running suite gets: run mode, parameters, progress, logging and directories."""

    quick: bool
    params: dict[str, str]
    results_dir: Path
    workdir: Path
    progress: ProgressSink | None = None
    echo: Callable[[str], None] | None = None
    log_lines: list[str] = field(default_factory=list)

    def task(self, description: str, total: float | None = None) -> ProgressTask:
        return ProgressTask(self.progress, description, total)

    def log(self, msg: str) -> None:
        """Record ``msg`` in the result's ``log`` and show it above the progress bars."""
        self.log_lines.append(msg)
        if self.echo is not None:
            self.echo(msg)

    def param(self, name: str, default: T) -> T:
        """The ``--param name=…`` value converted to the type of ``default``, or ``default``."""
        raw = self.params.get(name)
        if raw is None:
            return default
        kind = type(default)
        try:
            if kind is bool:
                lowered = raw.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                return lowered in ("1", "true", "yes", "on")
            return kind(raw)
        except ValueError:
            raise BenchError(
                f"--param {name}={raw!r} is not a valid {kind.__name__} (default {default!r})"
            ) from None


@dataclass
class RunRecord:
    """A finished run: the result plus everything needed to reproduce and compare it."""

    suite: Suite
    result: SuiteResult
    quick: bool
    params: dict[str, str]
    started_at: dt.datetime
    finished_at: dt.datetime
    machine: dict[str, Any]
    log_lines: list[str]

    @property
    def stem(self) -> str:
        return f"{self.suite.name}-{self.started_at.strftime('%Y%m%dT%H%M%SZ')}"

    def to_json(self) -> dict[str, Any]:
        result = self.result
        return {
            "schema": RESULT_SCHEMA,
            "suite": self.suite.name,
            "description": self.suite.description,
            "quick": self.quick,
            "params": dict(self.params),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round((self.finished_at - self.started_at).total_seconds(), 3),
            "figures": dict(result.figures),
            "units": dict(result.units),
            "targets": dict(result.targets),
            "targets_met": {name: result.target_met(name) for name in result.targets},
            "lower_is_better": sorted(result.lower_is_better),
            "ratios": dict(result.ratios),
            "series": {name: [[float(x), float(y)] for x, y in pts] for name, pts in result.series.items()},
            "x_label": result.x_label,
            "notes": list(result.notes),
            "log": list(self.log_lines),
            "machine": self.machine,
        }


# --- discovery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    suites: dict[str, Suite]
    broken: dict[str, str]  # module name → why it could not be loaded


def discover_suites(package: str = SUITES_PACKAGE) -> Discovery:
    """Every module of ``package`` holding a ``SUITE``; a module failing to import is reported, not fatal."""
    pkg = importlib.import_module(package)
    suites: dict[str, Suite] = {}
    broken: dict[str, str] = {}
    for module_info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module_name = f"{package}.{module_info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken suite must not hide the others
            broken[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        suite = getattr(module, "SUITE", None)
        if suite is None:
            continue
        if not isinstance(suite, Suite):
            broken[module_name] = f"SUITE is a {type(suite).__name__}, not a bench.framework.Suite"
        elif suite.name in suites:
            broken[module_name] = f"suite name {suite.name!r} is already used by another module"
        else:
            suites[suite.name] = suite
    return Discovery(suites=suites, broken=broken)


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` → dict; a pair without ``=`` or with an empty key is refused."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--param expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


# --- running -------------------------------------------------------------------------------------


def run_suite(
    suite: Suite,
    *,
    quick: bool,
    params: dict[str, str],
    results_dir: Path,
    progress: ProgressSink | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunRecord:
    """Run ``suite`` in a fresh temporary workdir and return its record (nothing written yet)."""
    unknown = sorted(set(params) - set(suite.params)) if suite.params else []
    if unknown:
        known = ", ".join(sorted(suite.params))
        raise BenchError(f"suite {suite.name!r} has no parameter {', '.join(unknown)} (known: {known})")
    started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix=f"bench-{suite.name}-") as workdir:
        ctx = SuiteContext(
            quick=quick,
            params=dict(params),
            results_dir=results_dir,
            workdir=Path(workdir),
            progress=progress,
            echo=echo,
        )
        result = _call_run(suite.run, ctx)
    finished_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if not isinstance(result, SuiteResult):
        raise TypeError(f"suite {suite.name!r} returned {type(result).__name__}, expected SuiteResult")
    try:
        result.validate()
    except ValueError as exc:
        raise ValueError(f"suite {suite.name!r}: {exc}") from None
    machine = machine_info(suite.packages)
    machine["load_average_before"] = load_before
    machine["load_average_after"] = _load_average()
    return RunRecord(
        suite=suite,
        result=result,
        quick=quick,
        params=dict(params),
        started_at=started_at,
        finished_at=finished_at,
        machine=machine,
        log_lines=ctx.log_lines,
    )


def _call_run(run: RunFunction, ctx: SuiteContext) -> SuiteResult:
    outcome = run(ctx)
    if inspect.isawaitable(outcome):
        return _run_coroutine(outcome)
    return outcome


def _run_coroutine(awaitable: Awaitable[SuiteResult]) -> SuiteResult:
    async def wrapper() -> SuiteResult:
        return await awaitable

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(wrapper())


# --- writing -------------------------------------------------------------------------------------


def unique_stem(results_dir: Path, stem: str) -> str:
    """``stem`` or ``stem-2``, ``stem-3``… so two runs in the same second never overwrite each other."""
    candidate, n = stem, 1
    while (results_dir / f"{candidate}.json").exists() or (results_dir / f"{candidate}.png").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def prepare_results_dir(results_dir: Path) -> Path:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(
            f"cannot create results directory {results_dir}: {exc.strerror}; pass --out DIR"
        ) from None
    if not os.access(results_dir, os.W_OK):
        raise BenchError(f"results directory {results_dir} is not writable; pass --out DIR")
    return results_dir


# --- machine information -------------------------------------------------------------------------


def machine_info(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Where the figures come from: CPU, cores, memory, kernel, Python, package versions, git commit."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_bytes": _memory_total_bytes(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions((*KEY_PACKAGES, *extra_packages)),
        "git": _git_state(),
        "hostname": platform.node(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in dict.fromkeys(names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in _read_lines("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_total_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in _read_lines("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _read_lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _git_state() -> dict[str, Any] | None:
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return completed.stdout.strip() if completed.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def monotonic() -> float:
    """The clock suites should time with (kept here so every suite measures the same way)."""
    return time.perf_counter()
