"""Admin list pages that stay fast on tens of millions of executions.

Django's changelist counts every matching row (``SELECT COUNT(*)``) and its field filters list
their choices with ``SELECT DISTINCT``: both read the whole table. Here, on PostgreSQL, a count
the planner estimates above ``EXACT_BELOW`` rows is shown as that estimate; the task and queue
filters offer the registered tasks and configured queues. Every page's rows come from an index
(status, task, date, each with ``created_at``).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from .conf import get_settings
from .registry import registry

#: Below this many estimated rows an exact count is cheap (an index range of a few pages).
EXACT_BELOW = 10_000


def estimated_count(queryset: QuerySet[Any]) -> int | None:
    """The PostgreSQL planner's row estimate for ``queryset``; None on other databases."""
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.order_by().values("pk").explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Counts exactly when few rows match, else says what PostgreSQL estimates."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet):
            estimate = estimated_count(queryset)
            if estimate is not None and estimate >= EXACT_BELOW:
                return estimate
        return super().count


class TaskNameFilter(admin.SimpleListFilter):
    """By task, choices from the registry (a ``DISTINCT`` over the table would read it all).
    Any name in the URL filters, registered or not (a task removed since)."""

    title = "task name"
    parameter_name = "task_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in registry.names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(task_name=self.value()) if self.value() else queryset


class QueueNameFilter(TaskNameFilter):
    """By queue, choices from the settings."""

    title = "queue name"
    parameter_name = "queue_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(q.queue_name, q.queue_name) for q in get_settings().queues]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(queue_name=self.value()) if self.value() else queryset
