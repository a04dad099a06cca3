"""PNG plot of a bench run: series as lines (one panel per unit), or a bar chart of the figures."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from bench.framework import RunRecord

PANEL_HEIGHT_IN = 3.2
WIDTH_IN = 10.0


def plot_record(record: RunRecord, path: Path) -> Path:
    """Write the plot of ``record`` to ``path`` (Agg backend, no display needed) and return ``path``."""
    result = record.result
    series_groups = _group_by_unit(list(result.series), result.units)
    # Figures in a unit no series shows (e.g. µs costs beside a messages/s series) get bar panels.
    bar_groups = {
        unit: names
        for unit, names in _group_by_unit(list(result.figures), result.units).items()
        if unit not in series_groups
    }
    panels = [(unit, names, True) for unit, names in series_groups.items()]
    panels += [(unit, names, False) for unit, names in bar_groups.items()]
    heights = [PANEL_HEIGHT_IN if is_series else _bar_height(names) for _, names, is_series in panels] or [
        1.0
    ]
    fig = Figure(figsize=(WIDTH_IN, 1.0 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    if not panels:
        axes[0].text(0.5, 0.5, "no figures", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, (unit, names, is_series) in zip(axes, panels, strict=True):
        if is_series:
            _draw_series(ax, record, names, unit)
        else:
            _draw_bars(ax, record, names, unit)
    fig.suptitle(_title(record), fontsize=11)
    fig.savefig(path, format="png", dpi=110)
    return path


def _group_by_unit(names: list[str], units: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(units.get(name, ""), []).append(name)
    return groups


def _draw_series(ax: Axes, record: RunRecord, names: list[str], unit: str) -> None:
    result = record.result
    for name in names:
        points = result.series[name]
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="." if len(points) < 60 else None,
            linewidth=1.4,
            label=name,
        )
    for figure, target in result.targets.items():
        if result.units.get(figure, "") == unit:
            comparator = "≤" if figure in result.lower_is_better else "≥"
            label = f"target {figure} {comparator} {_short(target)}"
            ax.axhline(target, linestyle="--", linewidth=1, color="grey", label=label)
    ax.set_xlabel(result.x_label)
    ax.set_ylabel(unit or "value")
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)


def _draw_bars(ax: Axes, record: RunRecord, names: list[str], unit: str) -> None:
    result = record.result
    values = [result.figures[n] for n in names]
    colours = [_bar_colour(result.target_met(n)) for n in names]
    bars = ax.barh(names, values, color=colours)
    ax.bar_label(bars, labels=[_short(v) for v in values], padding=3, fontsize=8)
    for index, name in enumerate(names):
        target = result.targets.get(name)
        if target is not None:
            ax.plot([target, target], [index - 0.4, index + 0.4], color="black", linewidth=1.5)
    ax.set_xlabel(unit or "value")
    ax.set_title(f"figures ({unit})" if unit else "figures", fontsize=10)
    ax.margins(x=0.12)  # room for the value labels
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)


def _bar_height(names: list[str]) -> float:
    return 0.9 + 0.32 * len(names)


def _bar_colour(met: bool | None) -> str:
    return {True: "tab:green", False: "tab:red"}.get(met, "tab:blue")  # type: ignore[arg-type]


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _title(record: RunRecord) -> str:
    machine = record.machine
    mode = "quick" if record.quick else "full"
    cpus = machine.get("cpus_usable") or machine.get("cpu_count")
    commit = (machine.get("git") or {}).get("commit")
    where = f"{machine.get('cpu_model', '?')} · {cpus} CPU · Python {machine.get('python', '?')}"
    when = record.started_at.strftime("%Y-%m-%d %H:%M UTC")
    suffix = f" · {commit[:10]}" if commit else ""
    return f"{record.suite.name} ({mode}) — {when}\n{where}{suffix}"
