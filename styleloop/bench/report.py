"""Where every benchmark's figures go: ``DIR/NAME.json``, a chart ``DIR/NAME.png`` and one
``DIR/SUMMARY.md`` over everything in the folder.

A benchmark hands :func:`write` its raw payload, the headline lines (ratios and
percentiles measured side by side in its run, each with its goal where it has one) and
one chart: named series of bars over the same labels. The summary is rebuilt from the
JSON files each time, so a folder that several runs wrote to still has one summary.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUMMARY = "SUMMARY.md"


@dataclass(frozen=True)
class Chart:
    """Grouped bars: for each series, one value per label (None = not measured); with
    ``lines``, one line per series over the labels in order (a time series)."""

    title: str
    ylabel: str
    labels: Sequence[str]
    series: Mapping[str, Sequence[float | None]]
    log: bool = False
    lines: bool = False


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "system": platform.system(),
    }


def draw(chart: Chart, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot is imported
    import matplotlib.pyplot as plt

    for name, values in chart.series.items():
        if len(values) != len(chart.labels):
            raise ValueError(
                f"series {name!r}: {len(values)} values for {len(chart.labels)} labels"
            )
    if chart.lines:
        fig, ax = plt.subplots(figsize=(9.0, 4.5))
        for name, values in chart.series.items():
            ax.plot(range(len(values)), [v if v is not None else float("nan") for v in values],
                    label=name)  # fmt: skip
        step = max(1, len(chart.labels) // 10)
        ticks = list(range(0, len(chart.labels), step))
        ax.set_xticks(ticks, [chart.labels[t] for t in ticks])
    else:
        width = 0.8 / max(1, len(chart.series))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(chart.labels) + 2), 4.0))
        for i, (name, values) in enumerate(chart.series.items()):
            xs = [j + (i - (len(chart.series) - 1) / 2) * width for j in range(len(chart.labels))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=name)
        ax.set_xticks(range(len(chart.labels)), list(chart.labels), rotation=30, ha="right")
    ax.set_ylabel(chart.ylabel)
    ax.set_title(chart.title)
    if chart.log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(
    folder: Path,
    name: str,
    payload: Mapping[str, Any],
    headline: Sequence[str],
    chart: Chart | None,
) -> Path:
    """Write ``NAME.json`` (and ``NAME.png``), then rebuild the folder's summary; returns
    the JSON file."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "headline": list(headline),
        "chart": f"{name}.png" if chart is not None else None,
        "figures": dict(payload),
    }
    if chart is not None:
        draw(chart, folder / f"{name}.png")
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    summarise(folder)
    return path


def summarise(folder: Path) -> Path:
    """``SUMMARY.md``: per benchmark, when and on what it ran, its headline and its chart."""
    lines = ["# StyleLoop benchmarks", ""]
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "benchmark" in record and "headline" in record:
            records.append(record)
    if not records:
        lines.append("No benchmark has written here yet (`make bench`).")
    for record in records:
        info = record.get("machine", {})
        lines += [
            f"## {record['benchmark']}",
            "",
            f"Measured {record.get('measured_at', '?')} on {info.get('cpus', '?')} CPU cores "
            f"({info.get('system', '?')} {info.get('machine', '?')}, Python "
            f"{info.get('python', '?')}); raw figures in `{record['benchmark']}.json`.",
            "",
        ]
        lines += [f"- {line}" for line in record["headline"]]
        if record.get("chart"):
            lines += ["", f"![{record['benchmark']}]({record['chart']})"]
        lines.append("")
    path = folder / SUMMARY
    path.write_text("\n".join(lines))
    return path


DEFAULT_RESULTS = Path("bench-results")


def report_argument(parser: Any) -> None:
    """Every benchmark's ``--results DIR``."""
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        metavar="DIR",
        help=f"write NAME.json, NAME.png and refresh {SUMMARY} here (default {DEFAULT_RESULTS}/)",
    )
