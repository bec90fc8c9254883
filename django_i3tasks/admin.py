"""Django admin: executions with their tries, result, chain and group; groups with counts.

Everything is read-only: rows are written by the execution path, and an edit made by hand
would break its guarantees. The one write is the "retry" action on failed executions.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from . import lifecycle
from .models import (
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
)


def _change_link(obj: TaskExecution | TaskGroup | None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:django_i3tasks_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj)


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
        "number", "status", "enqueued_at", "not_before", "started_at", "finished_at",
        "claims", "error_type", "error_message", "traceback",
    )
    ordering = ("number",)


class ResultInline(ReadOnlyInline):
    model = TaskExecutionResult
    fk_name = "execution"
    fields = readonly_fields = ("value", "is_repr", "task_try", "created_at")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        own = [f.name for f in self.model._meta.fields]
        return [*own, *self.readonly_fields]


@admin.register(TaskExecution)
class TaskExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "task_name", "status", "queue_name", "created_at", "finished_at", "try_count",
        "group_link",
    )
    list_filter = ("status", "queue_name", "task_name", "created_at")
    search_fields = ("=uuid", "task_name")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("chain", "group_link", "task_progress")
    inlines = (TryInline, ResultInline)
    actions = ("retry", "cancel")
    list_select_related = ("group",)

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        # The group page links to its members; groups are too many for a sidebar filter.
        return lookup in ("group__id__exact", "previous__id__exact") or super().lookup_allowed(
            lookup, value, request
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskExecution]:
        return super().get_queryset(request).annotate(_tries=Count("tries"))

    @admin.display(description="tries", ordering="_tries")
    def try_count(self, obj: TaskExecution) -> int:
        return getattr(obj, "_tries", None) or obj.tries.count()

    @admin.display(description="group")
    def group_link(self, obj: TaskExecution) -> str:
        return _change_link(obj.group)

    @admin.display(description="chain steps")
    def chain(self, obj: TaskExecution) -> str:
        """The steps before and after this one, oldest first."""
        before: list[TaskExecution] = []
        step = obj.previous
        while step is not None and len(before) < 50:
            before.insert(0, step)
            step = step.previous
        after: list[TaskExecution] = []
        following = list(obj.next_steps.all())
        while following and len(after) < 50:
            after.extend(following)
            following = list(TaskExecution.objects.filter(previous__in=following))
        if not before and not after:
            return "-"
        rows = [*((s, "") for s in before), (obj, " (this one)"), *((s, "") for s in after)]
        return format_html_join(
            "", "<div>{}{}</div>", ((_change_link(s), note) for s, note in rows)
        )

    @admin.action(description="Retry the selected failed executions", permissions=["change"])
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


    # --- task control (issue 12): a self-contained addition --------------------------------

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

    @admin.action(description="Cancel the selected executions", permissions=["change"])
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
        "uuid", "status", "succeeded_count", "failed_count", "total_count", "created_at",
        "finished_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("=uuid",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("progress", "callback_link", "members_link")

    @admin.display(description="progress")
    def progress(self, obj: TaskGroup) -> str:
        return f"{obj.succeeded_count} of {obj.total_count} succeeded, {obj.failed_count} failed"

    @admin.display(description="callback")
    def callback_link(self, obj: TaskGroup) -> str:
        return _change_link(obj.callback)

    @admin.display(description="members")
    def members_link(self, obj: TaskGroup) -> str:
        url = reverse("admin:django_i3tasks_taskexecution_changelist")
        count = obj.members.count()
        return format_html('<a href="{}?group__id__exact={}">{} members</a>', url, obj.pk, count)


@admin.register(ScheduleSlot)
class ScheduleSlotAdmin(ReadOnlyAdmin):
    list_display = ("schedule_key", "slot", "created_at")
    list_filter = ("schedule_key",)
    ordering = ("-slot",)
