"""The admin's workflow diagram: an execution's chain, group and failure handlers, drawn as
server-side HTML and CSS (no JavaScript, nothing fetched from elsewhere), coloured by status.

::

    [fetch ✓] ─value▶ [parse ✗ (this one)] ──▶ [store skipped]
                        on failure: alert ✓           on failure: alert (not run)
    group 1a2b3c4d: success 49 · failed 1  ─values▶ [summarize skipped]   on failure: alert ✓

A step's box links to its page; ``─value▶`` is a ``.pipe()`` hand-over, ``──▶`` a ``.then()``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from .models import TaskExecution, TaskGroup

#: Steps drawn at most on each side of the execution (a longer chain is cut, and says so).
MAX_STEPS = 30
#: Status → the colour class of the admin's status badges (``admin.STATUS_CLASSES``).
_CLASSES = {"success": "i3-ok", "failed": "i3-bad", "cancelled": "i3-bad", "expired": "i3-bad",
            "pending": "i3-busy", "waiting": "i3-wait", "scheduled": "i3-wait",
            "skipped": "i3-off"}


def _short(task_name: str) -> str:
    return task_name.rsplit(".", 1)[-1]


def _url(obj: TaskExecution | TaskGroup) -> str:
    return reverse(f"admin:django_i3tasks_{obj._meta.model_name}_change", args=[obj.pk])


def _badge(status: str, text: str | None = None) -> SafeString:
    return format_html('<span class="i3-status {}">{}</span>',
                       _CLASSES.get(status, "i3-neutral"), text or status)


def _node(execution: TaskExecution, this: bool = False) -> SafeString:
    return format_html(
        '<a class="i3-node {}{}" href="{}" title="{} {}"><b>{}</b>'
        '<span class="i3-mono">{}</span>{}{}</a>',
        _CLASSES.get(execution.status, "i3-neutral"), " i3-this" if this else "",
        _url(execution), execution.task_name, execution.uuid, _short(execution.task_name),
        str(execution.uuid)[:8], _badge(execution.status),
        mark_safe('<span class="i3-note">(this one)</span>') if this else "",
    )


def _handlers(stored: list[dict[str, Any]] | None, ran: list[TaskExecution]) -> SafeString:
    """The failure handlers attached to a step: the ones that ran link to their execution."""
    if not stored and not ran:
        return mark_safe("")
    by_task: dict[str, list[TaskExecution]] = defaultdict(list)
    for execution in ran:
        by_task[execution.task_name].append(execution)
    items = []
    for handler in stored or []:
        runs = by_task[handler["task_name"]]
        if runs:
            execution = runs.pop(0)
            items.append(format_html('<a href="{}">{}</a> {}', _url(execution),
                                     _short(handler["task_name"]), _badge(execution.status)))
        else:
            items.append(format_html("{} <small>(not run)</small>", _short(handler["task_name"])))
    return format_html('<div class="i3-handlers">on failure: {}</div>',
                       mark_safe(", ".join(items)))


def _chain(obj: TaskExecution) -> tuple[list[TaskExecution], list[TaskExecution]]:
    before: list[TaskExecution] = []
    step = obj.previous
    while step is not None and len(before) < MAX_STEPS:
        before.insert(0, step)
        step = step.previous
    after: list[TaskExecution] = []
    following = list(obj.next_steps.order_by("pk"))
    while following and len(after) < MAX_STEPS:
        after.extend(following)
        following = list(TaskExecution.objects.filter(previous__in=following).order_by("pk"))
    return before, after


def workflow(obj: TaskExecution) -> SafeString:
    """The diagram of ``obj``'s workflow, or ``-`` when it is a lone execution."""
    before, after = _chain(obj)
    steps = [*before, obj, *after]
    ran: dict[int, list[TaskExecution]] = defaultdict(list)
    for handler in TaskExecution.objects.filter(handler_of__in=[s.pk for s in steps]):
        ran[handler.handler_of_id].append(handler)
    parts = []
    if len(steps) > 1 or obj.on_failure or ran:
        cells = []
        for index, step in enumerate(steps):
            if index:
                cells.append(format_html('<span class="i3-arrow">{}</span>',
                                         "─value▶" if step.pipe else "──▶"))
            cells.append(format_html('<div class="i3-cell">{}{}</div>', _node(step, step == obj),
                                     _handlers(step.on_failure, ran[step.pk])))
        parts.append(format_html('<div class="i3-row">{}</div>', mark_safe("".join(cells))))
    group = obj.group or TaskGroup.objects.filter(callback=obj).first()
    if group is not None:
        parts.append(_group(group))
    if obj.handler_of_id is not None:
        origin = TaskExecution.objects.filter(pk=obj.handler_of_id).first()
        if origin is not None:
            parts.append(format_html('<div class="i3-row">failure handler of {}</div>',
                                     _node(origin)))
    if not parts:
        return mark_safe("-")
    return format_html('<div class="i3-flow">{}</div>', mark_safe("".join(parts)))


def _group(group: TaskGroup) -> SafeString:
    """Members by status (each count links to them), the callback and the group's handler."""
    counts = (TaskExecution.objects.filter(group=group).order_by().values("status")
              .annotate(n=Count("pk")).values_list("status", "n"))
    members_url = reverse("admin:django_i3tasks_taskexecution_changelist")
    members = format_html_join(
        " ", '<a href="{}?group__id__exact={}&amp;status__exact={}">{}</a>',
        ((members_url, group.pk, status, _badge(status, f"{status} {n}"))
         for status, n in sorted(counts)),
    )
    callback = group.callback
    cells = [format_html(
        '<div class="i3-cell"><a class="i3-node {}" href="{}"><b>group</b>'
        '<span class="i3-mono">{}</span>{}<span class="i3-members">{} of {} · {}</span></a>'
        "{}</div>",
        _CLASSES.get(group.status, "i3-neutral"), _url(group), str(group.uuid)[:8],
        _badge(group.status), group.succeeded_count, group.total_count, members or "-",
        _handlers([group.on_failure] if group.on_failure else None,
                  [group.failure_handler] if group.failure_handler else []),
    )]
    if callback is not None:
        cells.append(format_html('<span class="i3-arrow">{}</span>',
                                 "─values▶" if group.pass_results else "──▶"))
        cells.append(format_html('<div class="i3-cell">{}</div>', _node(callback)))
    return format_html('<div class="i3-row">{}</div>', mark_safe("".join(cells)))
