"""Admin pages of the schedules: ``PeriodicTask`` rows edited here, settings ``Schedule``s
shown read-only above them (they change only with a deploy).

The form offers the registered tasks and refuses a bad cron expression, time zone or task
with the reason, so the beat never meets a row it cannot run.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse

from . import periodic
from .conf import get_settings
from .models import PeriodicTask, ScheduleState


class PeriodicTaskForm(forms.ModelForm):
    # A select of the registered tasks; a value that is not one reaches clean_task_name
    # (a ChoiceField would answer only "Select a valid choice").
    task_name = forms.CharField(max_length=255, widget=forms.Select())

    class Meta:
        model = PeriodicTask
        fields = ("name", "task_name", "cron", "timezone", "args", "kwargs", "queue_name",
                  "enabled", "description")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = periodic.registered_task_names()
        choices = [("", "---------")] + [(name, name) for name in names]
        current = self.instance.task_name if self.instance and self.instance.pk else ""
        if current and current not in names:
            choices.append((current, f"{current} (not registered)"))
        widget: Any = self.fields["task_name"].widget
        widget.choices = choices

    def clean_task_name(self) -> str:
        value: str = self.cleaned_data["task_name"]
        if error := periodic.task_error(value):
            raise forms.ValidationError(error)
        return value

    def clean_cron(self) -> str:
        value: str = self.cleaned_data["cron"].strip()
        if error := periodic.cron_error(value):
            raise forms.ValidationError(error)
        return value

    def clean_timezone(self) -> str:
        value: str = self.cleaned_data["timezone"].strip()
        if error := periodic.timezone_error(value):
            raise forms.ValidationError(error)
        return value

    def clean_args(self) -> Any:
        value = self.cleaned_data["args"]
        if not isinstance(value, list):
            raise forms.ValidationError("args must be a JSON list, e.g. [1, \"a\"]")
        return value

    def clean_kwargs(self) -> Any:
        value = self.cleaned_data["kwargs"]
        if not isinstance(value, dict):
            raise forms.ValidationError("kwargs must be a JSON object, e.g. {\"n\": 1}")
        return value

    def clean_queue_name(self) -> str:
        value: str = self.cleaned_data["queue_name"].strip()
        if value:
            conf = get_settings()
            names = [conf.default_queue.queue_name, *(q.queue_name for q in conf.other_queues)]
            if value not in names:
                raise forms.ValidationError(
                    f"{value!r} is not a configured queue (configured: {', '.join(names)})")
        return value


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    form = PeriodicTaskForm
    list_display = ("name", "task_name", "cron", "timezone", "enabled", "last_run_at",
                    "next_run_at")
    list_filter = ("enabled", "task_name")
    search_fields = ("name", "task_name", "description")
    readonly_fields = ("last_run_at", "next_run_at")
    list_editable = ("enabled",)
    change_list_template = "admin/django_i3tasks/periodictask/change_list.html"

    class Media:
        css = {"all": ("django_i3tasks/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[PeriodicTask]:
        """Each row's beat state (last and next slot) in the page's one query."""
        state = ScheduleState.objects.filter(key=Concat(
            Value(periodic.KEY_PREFIX), Cast(OuterRef("pk"), output_field=CharField())))
        return super().get_queryset(request).annotate(
            state_next_fire=Subquery(state.values("next_fire")[:1]),
            state_last_slot=Subquery(state.values("last_slot")[:1]),
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {"settings_schedules": settings_schedules(), **(extra_context or {})})


def settings_schedules() -> list[dict[str, Any]]:
    """The settings ``Schedule``s with where the beat stands on each (one query)."""
    schedules = get_settings().schedules
    states = {key: (next_fire, last_slot) for key, next_fire, last_slot in
              ScheduleState.objects.filter(key__in=[s.key for s in schedules])
              .values_list("key", "next_fire", "last_slot")} if schedules else {}
    rows = []
    for schedule in schedules:
        next_fire, last_slot = states.get(schedule.key, (None, None))
        rows.append({
            "key": schedule.key, "task_name": schedule.task_name, "cron": schedule.cron,
            "timezone": schedule.timezone, "args": list(schedule.args),
            "kwargs": schedule.kwargs, "last_run_at": last_slot,
            "next_run_at": next_fire if next_fire and next_fire.year > 1970 else None,
        })
    return rows
