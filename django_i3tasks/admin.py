"""Django admin: executions with their tries, result, chain and group; groups with progress.

Everything is read-only: rows are written by the execution path, and an edit made by hand
would break its guarantees. Pages are "view" pages (no Save); delete stays, for cleanup. The
one write is the "retry" action on failed executions.

Lists fit a 1366 px screen: short uuids, times with seconds, a duration column, and a status
colour (unknown statuses get a neutral one, so statuses added later still render). These pages
leave out the admin's app sidebar: at 1366 px it takes the width the columns need (the
breadcrumbs and the admin index still lead everywhere).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Max, Min, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from . import diagrams, lifecycle
from .adminlists import EstimatedCountPaginator, QueueNameFilter, TaskNameFilter
from .models import (
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
)

#: CSS class per status (executions, tries and groups); anything else is ``i3-neutral``.
STATUS_CLASSES: dict[str, str] = {
    "success": "i3-ok",
    "failed": "i3-bad",
    "pending": "i3-busy",
    "running": "i3-busy",
    "queued": "i3-wait",
    "waiting": "i3-wait",
    "scheduled": "i3-wait",
    "skipped": "i3-off",
}


def status_badge(status: str) -> SafeString:
    """The status as a coloured label; a status without a colour gets the neutral one."""
    css = STATUS_CLASSES.get(status, "i3-neutral")
    return format_html('<span class="i3-status {}">{}</span>', css, status)


def seconds_time(value: datetime.datetime | None) -> str:
    """A time in the current time zone, to the second (Django's default format drops them)."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def human_duration(start: datetime.datetime | None, end: datetime.datetime | None) -> str:
    """``0.042 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; ``-`` when not both known."""
    if start is None or end is None:
        return "-"
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def short_uuid(value: Any) -> str:
    return str(value)[:8]


def _change_link(obj: TaskExecution | TaskGroup | None, text: str | None = None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:django_i3tasks_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}" title="{}">{}</a>', url, obj, text or obj)


def _execution_label(execution: TaskExecution) -> str:
    return f"{execution.task_name} · {short_uuid(execution.uuid)} · {execution.status}"


def _json_block(value: Any) -> SafeString:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=repr)
    return format_html('<pre class="i3-pre">{}</pre>', text)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TryInline(ReadOnlyInline):
    model = TaskExecutionTry
    fields = readonly_fields = (
        "number", "try_status", "started", "duration_text", "waited", "claims", "error",
    )
    ordering = ("number",)

    @admin.display(description="status")
    def try_status(self, obj: TaskExecutionTry) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="started")
    def started(self, obj: TaskExecutionTry) -> str:
        return seconds_time(obj.started_at)

    @admin.display(description="ran for")
    def duration_text(self, obj: TaskExecutionTry) -> str:
        return human_duration(obj.started_at, obj.finished_at)

    @admin.display(description="waited")
    def waited(self, obj: TaskExecutionTry) -> str:
        """Enqueued to started: queueing plus the retry backoff (``not_before``)."""
        return human_duration(obj.enqueued_at, obj.started_at)

    @admin.display(description="error")
    def error(self, obj: TaskExecutionTry) -> str:
        """Type and message; the traceback folded underneath, wrapped to the page width."""
        if not obj.error_type and not obj.error_message:
            return "-"
        head = format_html(
            '<div class="i3-error"><strong>{}</strong>: {}</div>',
            obj.error_type, obj.error_message,
        )
        if not obj.traceback:
            return head
        return format_html(
            '{}<details class="i3-traceback"><summary>traceback</summary>'
            '<pre class="i3-pre">{}</pre></details>',
            head, obj.traceback,
        )


class ResultInline(ReadOnlyInline):
    model = TaskExecutionResult
    fk_name = "execution"
    fields = readonly_fields = ("result_value", "is_repr", "from_try", "recorded")

    @admin.display(description="value")
    def result_value(self, obj: TaskExecutionResult) -> SafeString:
        return _json_block(obj.value)

    @admin.display(description="try")
    def from_try(self, obj: TaskExecutionResult) -> int:
        return obj.task_try.number

    @admin.display(description="recorded")
    def recorded(self, obj: TaskExecutionResult) -> str:
        return seconds_time(obj.created_at)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskExecutionResult]:
        return super().get_queryset(request).select_related("task_try")


def _without_sidebar(extra_context: dict[str, Any] | None) -> dict[str, Any]:
    return {"is_nav_sidebar_enabled": False, **(extra_context or {})}


class ReadOnlyAdmin(admin.ModelAdmin):
    """View pages without Save buttons: no add, no change; delete stays."""

    class Media:
        css = {"all": ("django_i3tasks/admin.css",)}

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(request, _without_sidebar(extra_context))

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url,
                                       _without_sidebar(extra_context))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(TaskExecution)
class TaskExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id", "task", "status_label", "try_count", "duration", "queue", "created",
        "group_short",
    )
    list_display_links = ("short_id",)
    # No date hierarchy: its year/month links come from a DISTINCT over the whole table;
    # the created_at filter (today, past 7 days, this month...) stays on its index.
    list_filter = ("status", QueueNameFilter, TaskNameFilter, "created_at")
    search_fields = ("=uuid", "task_name")
    ordering = ("-created_at",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Rendering a row costs ~1-3 ms of Python (bench/scale.py): 50 keep a page under 300 ms.
    list_per_page = 50
    fieldsets = (
        (None, {"fields": (
            "uuid", "task_name", "status_label", "queue_name", "max_retries", "created",
            "eta_at", "finished", "duration", "task_progress", "group_link", "chain",
            "concurrency_key",
        )}),
        ("Call", {"fields": ("call_args", "call_kwargs")}),
    )
    readonly_fields = (
        "uuid", "task_name", "status_label", "queue_name", "max_retries", "created", "eta_at",
        "finished", "duration", "task_progress", "group_link", "chain", "call_args",
        "call_kwargs", "concurrency_key",
    )
    inlines = (TryInline, ResultInline)
    actions = ("retry", "cancel")
    list_select_related = ("group",)

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        # The group page links to its members; groups are too many for a sidebar filter.
        if lookup in ("group__id__exact", "previous__id__exact"):
            return True
        if request is None:  # Django 4.2 calls it without the request
            return super().lookup_allowed(lookup, value)  # type: ignore[call-arg]
        return super().lookup_allowed(lookup, value, request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskExecution]:
        # One query for the whole page. The try count and the run span are correlated
        # subqueries, not a GROUP BY over the join: PostgreSQL computes them for the page's
        # rows only, and the count query leaves them out.
        tries = TaskExecutionTry.objects.filter(execution=OuterRef("pk")).order_by().values(
            "execution")
        return super().get_queryset(request).annotate(
            _tries=Subquery(tries.annotate(n=Count("pk")).values("n")),
            _first_start=Subquery(tries.annotate(t=Min("started_at")).values("t")),
            _last_finish=Subquery(tries.annotate(t=Max("finished_at")).values("t")),
        )

    def get_inlines(self, request: HttpRequest, obj: TaskExecution | None) -> list[Any]:
        """The result section only where there is a result (no empty table on failures)."""
        has_result = obj is not None and TaskExecutionResult.objects.filter(execution=obj).exists()
        return [i for i in self.inlines if i is not ResultInline or has_result]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """The retry action writes; it needs the change permission the pages do not use."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    #: Cancelling writes too: the same permission.
    has_cancel_permission = has_retry_permission

    @admin.display(description="uuid", ordering="uuid")
    def short_id(self, obj: TaskExecution) -> SafeString:
        return format_html('<span class="i3-mono" title="{}">{}</span>', obj.uuid,
                           short_uuid(obj.uuid))

    @admin.display(description="task", ordering="task_name")
    def task(self, obj: TaskExecution) -> SafeString:
        """The dotted name, allowed to break only after a dot."""
        parts = obj.task_name.split(".")
        return format_html('<span title="{}">{}</span>', obj.task_name,
                           format_html_join(mark_safe(".<wbr>"), "{}", ((p,) for p in parts)))

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: TaskExecution) -> SafeString:
        """The status; a parked execution says which limit it waits for."""
        if obj.wait_reason:
            return format_html('{} <span class="i3-mono" title="parked by a limit">{}</span>',
                               status_badge(obj.status), obj.wait_reason)
        return status_badge(obj.status)

    @admin.display(description="tries", ordering="_tries")
    def try_count(self, obj: TaskExecution) -> int:
        return getattr(obj, "_tries", None) or obj.tries.count()

    @admin.display(description="duration")
    def duration(self, obj: TaskExecution) -> str:
        """From the first try's start to the last try's finish (backoffs included)."""
        if obj.finished_at is None:
            return "-"
        return human_duration(getattr(obj, "_first_start", None),
                              getattr(obj, "_last_finish", None))

    @admin.display(description="queue", ordering="queue_name")
    def queue(self, obj: TaskExecution) -> str:
        return obj.queue_name

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: TaskExecution) -> str:
        return seconds_time(obj.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: TaskExecution) -> str:
        return seconds_time(obj.finished_at)

    @admin.display(description="eta")
    def eta_at(self, obj: TaskExecution) -> str:
        return seconds_time(obj.eta)

    @admin.display(description="group", ordering="group__created_at")
    def group_short(self, obj: TaskExecution) -> str:
        if obj.group is None:
            return "-"
        return _change_link(obj.group, short_uuid(obj.group.uuid))

    @admin.display(description="group")
    def group_link(self, obj: TaskExecution) -> str:
        return _change_link(obj.group)

    @admin.display(description="args")
    def call_args(self, obj: TaskExecution) -> SafeString:
        return _json_block(obj.args)

    @admin.display(description="kwargs")
    def call_kwargs(self, obj: TaskExecution) -> SafeString:
        return _json_block(obj.kwargs)

    @admin.display(description="workflow")
    def chain(self, obj: TaskExecution) -> SafeString:
        """Its chain, group and failure handlers, drawn (``diagrams``)."""
        return diagrams.workflow(obj)

    @admin.action(description="Retry the selected failed executions", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        selected = list(queryset.order_by().values_list("pk", flat=True))
        retried = lifecycle.retry(selected)
        skipped = len(selected) - len(retried)
        self.message_user(request, f"{len(retried)} execution(s) retried.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} selected execution(s) were not failed and were left alone.",
                messages.WARNING,
            )

    # --- task control ----------------------------------------------------------------------

    @admin.display(description="progress")
    def task_progress(self, obj: TaskExecution) -> str:
        """The latest try's ``set_progress()``: "3 / 10 (30%) message"."""
        last = obj.tries.order_by("-number").values_list("progress", flat=True).first()
        if not isinstance(last, dict):
            return "-"
        current, total = last.get("current"), last.get("total")
        text = f"{current} / {total}" if total is not None else f"{current}"
        if total and current is not None:
            text += f" ({100 * current / total:.0f}%)"
        return f"{text} {last.get('message', '')}".strip()

    @admin.action(description="Cancel the selected executions", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        selected = list(queryset.order_by("pk").values_list("pk", flat=True))
        cancelled = sum(lifecycle.cancel(pk) for pk in selected)
        self.message_user(
            request, f"{cancelled} execution(s) cancelled or asked to stop.", messages.SUCCESS
        )
        if cancelled < len(selected):
            self.message_user(
                request, f"{len(selected) - cancelled} selected execution(s) had already "
                "finished and were left alone.", messages.WARNING,
            )


@admin.register(TaskGroup)
class TaskGroupAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id", "status_label", "progress_short", "callback_link", "created", "finished",
        "duration",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "created_at")
    search_fields = ("=uuid",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_select_related = ("callback",)
    fields = readonly_fields = (
        "uuid", "status_label", "progress", "callback_link", "members_link", "created",
        "finished", "duration",
    )

    @admin.display(description="uuid", ordering="uuid")
    def short_id(self, obj: TaskGroup) -> SafeString:
        return format_html('<span class="i3-mono" title="{}">{}</span>', obj.uuid,
                           short_uuid(obj.uuid))

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: TaskGroup) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="progress")
    def progress(self, obj: TaskGroup) -> SafeString:
        return format_html(
            '<progress class="i3-progress" value="{}" max="{}"></progress> '
            "{} of {} succeeded, {} failed",
            obj.succeeded_count, max(obj.total_count, 1), obj.succeeded_count,
            obj.total_count, obj.failed_count,
        )

    @admin.display(description="progress")
    def progress_short(self, obj: TaskGroup) -> SafeString:
        return format_html(
            '<progress class="i3-progress" value="{}" max="{}" title="{} failed"></progress> '
            "{}/{}{}",
            obj.succeeded_count, max(obj.total_count, 1), obj.failed_count,
            obj.succeeded_count, obj.total_count,
            f", {obj.failed_count} failed" if obj.failed_count else "",
        )

    @admin.display(description="callback")
    def callback_link(self, obj: TaskGroup) -> str:
        if obj.callback is None:
            return "-"
        return _change_link(obj.callback, _execution_label(obj.callback))

    @admin.display(description="members")
    def members_link(self, obj: TaskGroup) -> str:
        url = reverse("admin:django_i3tasks_taskexecution_changelist")
        count = obj.members.count()
        return format_html('<a href="{}?group__id__exact={}">{} members</a>', url, obj.pk, count)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: TaskGroup) -> str:
        return seconds_time(obj.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: TaskGroup) -> str:
        return seconds_time(obj.finished_at)

    @admin.display(description="duration")
    def duration(self, obj: TaskGroup) -> str:
        return human_duration(obj.created_at, obj.finished_at)


@admin.register(ScheduleSlot)
class ScheduleSlotAdmin(ReadOnlyAdmin):
    list_display = ("schedule_key", "slot_time", "execution_uuid", "created")
    list_filter = ("schedule_key",)
    ordering = ("-slot",)
    fields = readonly_fields = ("schedule_key", "slot_time", "execution_uuid", "created")

    @admin.display(description="slot", ordering="slot")
    def slot_time(self, obj: ScheduleSlot) -> str:
        return seconds_time(obj.slot)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ScheduleSlot) -> str:
        return seconds_time(obj.created_at)

# The schedules' pages live in their own module (PeriodicTask, settings schedules).
from . import admin_dashboard, admin_schedules  # noqa: E402, F401 - register their admins
