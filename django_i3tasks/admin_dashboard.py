"""The admin dashboard (``admin/django_i3tasks/dashboard/``): what an operator on call asks
first. Rendered on the server as SVG (no JavaScript, nothing from a CDN), from a handful of
grouped queries (``stats``), for the last hour or the last 24 hours.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from . import outbox, stats
from .models import Dashboard, TaskExecution

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
#: Outcome colours of the stacked chart (the admin's status colours).
COLOURS = {"success": "#15803d", "failed": "#b91c1c", "cancelled": "#9ca3af",
           "expired": "#b45309", "running": "#1d4ed8", "queued": "#6b7280"}
WIDTH, HEIGHT = 900, 180


def _buckets(since: datetime, now: datetime, step: timedelta) -> list[datetime]:
    start = since.replace(second=0, microsecond=0)
    if step >= timedelta(hours=1):
        start = start.replace(minute=0)
    points = []
    while start <= now:
        points.append(start)
        start += step
    return points


def stacked_chart(rows: list[tuple[Any, str, int]], points: list[datetime],
                  per: str) -> SafeString:
    """Finished tries per bucket, stacked by outcome, as an SVG of rectangles."""
    counts: dict[datetime, dict[str, int]] = defaultdict(dict)
    for bucket, status, n in rows:
        counts[bucket][status] = n
    top = max([sum(c.values()) for c in counts.values()] + [1])
    slot = WIDTH / max(len(points), 1)
    bars = []
    for i, point in enumerate(points):
        y = float(HEIGHT)
        for status in COLOURS:
            n = counts.get(point, {}).get(status, 0)
            if not n:
                continue
            h = HEIGHT * n / top
            y -= h
            bars.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                "<title>{} {}: {} {}</title></rect>",
                f"{i * slot:.2f}", f"{y:.2f}", f"{max(slot - 0.5, 0.5):.2f}", f"{h:.2f}",
                COLOURS[status],
                timezone.localtime(point).strftime("%H:%M"), per, n, status))
    legend = format_html_join(" ", '<span class="i3-key" style="background:{}"></span>{}',
                              ((c, s) for s, c in COLOURS.items()))
    return format_html(
        '<svg class="i3-chart" viewBox="0 -12 {} {}" width="100%" role="img" '
        'aria-label="finished tries per {} by outcome">'
        '<text x="0" y="-2" class="i3-axis">max {} per {}</text>'
        '<line x1="0" y1="{}" x2="{}" y2="{}" class="i3-base"/>{}</svg>'
        '<div class="i3-legend">{}</div>',
        WIDTH, HEIGHT + 14, per, top, per, HEIGHT, WIDTH, HEIGHT,
        mark_safe("".join(bars)), legend)


def sparkline(values: list[int]) -> SafeString:
    top = max(values + [1])
    step = 120 / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{20 - 18 * v / top:.1f}" for i, v in enumerate(values))
    return format_html('<svg class="i3-spark" viewBox="0 0 120 22" width="120" height="22">'
                       '<polyline points="{}" fill="none" stroke="#1d4ed8" '
                       'stroke-width="1.2"/></svg>', points)


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def dashboard_context(window: str) -> dict[str, Any]:
    """Everything the page shows: three queries on PostgreSQL, five elsewhere."""
    now = timezone.now()
    since = now - WINDOWS[window]
    by_hour = window == "24h"
    points = _buckets(since, now, timedelta(hours=1) if by_hour else timedelta(minutes=1))
    per = "hour" if by_hour else "minute"
    tries = stats.window_tries(since, by_hour)  # 1 query on PostgreSQL (3 elsewhere)
    outcomes, per_task, timings = tries["outcomes"], tries["per_task"], tries["timings"]
    counts = stats.status_counts(since)
    open_rows, oldest = stats.open_executions()
    series: dict[str, dict[datetime, int]] = defaultdict(dict)
    for bucket, task, n in per_task:
        series[task][bucket] = n
    tasks: list[dict[str, Any]] = []
    for task in sorted(set(counts) | set(timings)):
        by_status = counts.get(task, {})
        done = by_status.get("success", 0) + by_status.get("failed", 0)
        times = timings.get(task, {})
        tasks.append({
            "task": task, "total": sum(by_status.values()),
            "success": by_status.get("success", 0), "failed": by_status.get("failed", 0),
            "failure_rate": f"{by_status.get('failed', 0) / done:.1%}" if done else "-",
            "p50_duration": _seconds(times.get("p50_duration")),
            "p95_duration": _seconds(times.get("p95_duration")),
            "p50_delay": _seconds(times.get("p50_delay")),
            "p95_delay": _seconds(times.get("p95_delay")),
            "spark": sparkline([series[task].get(p, 0) for p in points]),
        })
    finished = sum(t["success"] + t["failed"] for t in tasks)
    failed = sum(t["failed"] for t in tasks)
    return {
        "window": window, "windows": list(WINDOWS), "since": since,
        "chart": stacked_chart(outcomes, points, per),
        "failure_rate": f"{failed / finished:.1%}" if finished else "-",
        "finished": finished, "failed": failed, "tasks": tasks,
        "open_rows": sorted(open_rows, key=lambda r: (r[1], r[0])),
        "oldest": [(queue, _seconds((now - created).total_seconds()))
                   for queue, created in sorted(oldest.items())],
        "publish_failures": outbox.recent_failures(WINDOWS[window].total_seconds()),
    }


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """The dashboard as the changelist of a proxy model: it gets the admin's URL scheme,
    permissions and a line in the app index without a custom admin site."""

    class Media:
        css = {"all": ("django_i3tasks/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Whoever may view executions may view their dashboard."""
        opts: Any = TaskExecution._meta
        return request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}") or \
            request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        window = request.GET.get("window", "1h")
        if window not in WINDOWS:
            window = "1h"
        context = {
            **self.admin_site.each_context(request), "opts": self.opts,
            "title": f"Tasks dashboard, last {window}", "is_nav_sidebar_enabled": False,
            "media": self.media, **dashboard_context(window), **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_i3tasks/dashboard.html", context)
