"""The report of ``bench/compare.py``: the table, the targets, the chart."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any


def med(entry: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry["median"] if isinstance(entry, dict) else entry


def table(result: dict[str, Any]) -> str:
    s = result["systems"]
    lines = [f"\n## {result['db']}  (sizes {result['sizes']}, load average at the end "
             f"{result['load_average'][0]:.2f})"]

    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:,.1f}{unit}"

    head = f"{'system':<22}{'noop/s':>9}{'spread':>12}{'50ms/s':>8}{'bulk ms':>9}" \
           f"{'fan enq s':>10}{'fan done s':>11}{'enq ms':>8}{'p95 ms':>8}  pool / in flight"
    lines.append(head)
    for system, entry in s.items():
        noop = entry.get("noop")
        spread = "-" if not noop else f"{noop['min']:.0f}-{noop['max']:.0f}"
        lat = med(entry, "enqueue", "median") or med(entry, "enqueue", "mean")
        p95 = med(entry, "enqueue", "p95")
        bulk = med(entry, "bulk")
        extra = []
        for workload in ("noop", "sleep"):
            if isinstance(entry.get(workload), dict) and "pool" in entry[workload]:
                extra.append(f"{workload}: {entry[workload]['pool']}")
        flights = (noop or {}).get("in_flight") or []
        if flights:
            extra.append(f"in flight: views mean {statistics.mean(f['mean'] for f in flights):.1f}"
                         f" max {max(f['max'] for f in flights)}, sender mean "
                         f"{statistics.mean(f['sender']['mean'] for f in flights):.1f} max "
                         f"{max(f['sender']['max'] for f in flights)}")
        lines.append(f"{system:<22}{fmt(med(entry, 'noop')):>9}{spread:>12}"
                     f"{fmt(med(entry, 'sleep')):>8}{fmt(bulk and bulk * 1000):>9}"
                     f"{fmt(med(entry, 'fanout', 'enqueue')):>10}"
                     f"{fmt(med(entry, 'fanout', 'callback')):>11}"
                     f"{fmt(lat and lat * 1000):>8}{fmt(p95 and p95 * 1000):>8}  "
                     f"{', '.join(extra)}")
    for system, entry in s.items():
        if "sql" in entry:
            lines.append(f"SQL data statements, {system}: {entry['sql']}")
    checks = result.get("sessions") or []
    if checks:
        worst = max(checks, key=lambda c: c["per_task"] if not c.get("expected") else -1)
        bad = [c for c in checks if not c["ok"]]
        lines.append(f"PostgreSQL sessions per task: {len(checks)} runs checked, highest "
                     f"(CONN_MAX_AGE=0 rows aside) {worst['per_task']:.3f} ({worst['system']} "
                     f"{worst['workload']}); "
                     + ("all about 0" if not bad else "ABOVE ABOUT 0: " + ", ".join(
                         f"{c['system']} {c['workload']} {c['per_task']:.3f}" for c in bad)))
    lines.extend(targets(result))
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[str]:
    """The issue's targets as ratios of medians of this run (PostgreSQL is where they are
    judged; on SQLite they are printed for information)."""
    s = result["systems"]

    def get(system: str, *path: str) -> float | None:
        return med(s.get(system, {}), *path)

    def best(names: tuple[str, ...], *path: str, low: bool = False) -> tuple[str, float | None]:
        found = [(n, get(n, *path)) for n in names if get(n, *path)]
        if not found:
            return "-", None
        return (min if low else max)(found, key=lambda item: item[1])

    rows: list[tuple[str, float | None, str, float]] = []

    def ratio(label: str, x: float | None, y: float | None, op: str, target: float) -> None:
        rows.append((label, x / y if x and y else None, op, target))

    flights = (s.get("ours-push", {}).get("noop") or {}).get("in_flight") or []
    inflight = f" (ours in flight at the sender: mean " \
               f"{statistics.mean(f['sender']['mean'] for f in flights):.1f}, max " \
               f"{max(f['sender']['max'] for f in flights)})" if flights else ""
    ratio(f"push / 2-statement floor{inflight}", get("ours-push", "noop"),
          get("floor", "noop"), ">=", 0.9)
    flow = (s.get("ceiling-pull", {}).get("noop") or {}).get("flow_control")
    ratio(f"pull / pull ceiling (flow control {flow})", get("ours-pull", "noop"),
          get("ceiling-pull", "noop"), ">=", 0.6)
    name, value = best(("celery-db", "celery-db-safe"), "noop")
    ratio(f"pull no-op / best Celery + DB results ({name})", get("ours-pull", "noop"), value,
          ">=", 1.2)
    ratio("pull no-op / Celery + Redis results", get("ours-pull", "noop"),
          get("celery-redis", "noop"), ">=", 1.0)
    name, value = best(("procrastinate", "django-tasks-db"), "noop")
    ratio(f"pull no-op / best durable peer ({name})", get("ours-pull", "noop"), value,
          ">=", 1.5)
    name, value = best(("procrastinate", "django-tasks-db"), "sleep")
    ratio(f"pull 50 ms / best durable peer ({name})", get("ours-pull", "sleep"), value,
          ">=", 1.5)
    name, value = best(("procrastinate", "django-tasks-db"), "enqueue", "median", low=True)
    ratio(f".delay() / fastest durable peer's enqueue ({name})",
          get("ours-push", "enqueue", "median"), value, "<=", 1.0)
    lines = [f"targets ({result['db']}):"]
    alone = get("ours-pull-backlog", "noop")
    if alone and get("ceiling-pull", "noop"):
        lines.append(f"  pull worker alone (backlog) / pull ceiling (for information): "
                     f"{alone / get('ceiling-pull', 'noop'):.2f}")
    on, off = get("ours-push", "noop"), get("ours-push-metrics-off", "noop")
    if on and off:
        lines.append(f"  metrics on / off, push no-op (issue 26, for information): {on / off:.2f}")
    for label, value, op, target in rows:
        if value is None:
            lines.append(f"  {label}: not measured")
            continue
        met = value >= target if op == ">=" else value <= target
        lines.append(f"  {label}: {value:.2f} (target {op} {target:.2f}: "
                     f"{'met' if met else 'MISSED'})")
    for kind, figures in s.get("ours-push", {}).get("beat", {}).items():
        target = figures["target"]
        worst = max(figures["warm_median"], figures["new_process"])
        lines.append(
            f"  beat, 10,000 schedules, {kind}: warm {figures['warm_median'] * 1000:,.0f} ms "
            f"(max {figures['warm_max'] * 1000:,.0f}), new process "
            f"{figures['new_process'] * 1000:,.0f} ms, first call ever "
            f"{figures['cold'] * 1000:,.0f} ms (target < {target * 1000:,.0f} ms warm and "
            f"new process: {'met' if worst < target else 'MISSED'})")
    return lines


def chart(results: list[dict[str, Any]], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(results), 2, figsize=(13, 4.2 * len(results)),
                                squeeze=False)
    for row, result in zip(axes, results, strict=True):
        for ax, workload, title in ((row[0], "noop", "no-op tasks/s"),
                                    (row[1], "sleep", "50 ms tasks/s (8 at once)")):
            names = [n for n, e in result["systems"].items() if workload in e]
            values = [med(result["systems"][n], workload) for n in names]
            errors = [[v - result["systems"][n][workload]["min"] for n, v in
                       zip(names, values, strict=True)],
                      [result["systems"][n][workload]["max"] - v for n, v in
                       zip(names, values, strict=True)]]
            colors = ["#1f77b4" if n.startswith("ours") else "#9467bd" if n == "old" else "#999999"
                      if n.startswith(("ceiling", "floor", "naive")) else "#2ca02c"
                      if n in ("procrastinate", "django-tasks-db") else "#d62728"
                      for n in names]
            ax.bar(names, values, yerr=errors, color=colors, capsize=3)
            ax.set_title(f"{result['db']}: {title}")
            ax.tick_params(axis="x", rotation=50)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    figure.suptitle(f"django-i3tasks vs Celery, procrastinate, django-tasks-db, 0.1.9, the "
                    f"floor and the transport ceiling - "
                    f"{machine}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def machine() -> str:
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
            f", load average {load:.1f} when the run ended")
