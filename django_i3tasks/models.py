"""Database records of executions, their tries and results, groups and beat slots.

An *execution* is one call of a task (``.delay()``); a *try* is one attempt to run it. The
execution's ``status`` only changes at lifecycle edges (released, finished), so running a task
costs few writes; whether a try is running right now is on the try row.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.apps import apps
from django.db import models
from django.utils import timezone


class ExecutionStatus(models.TextChoices):
    #: A chain step or group callback waiting for what comes before it, or an execution
    #: parked by a concurrency or rate limit (``wait_reason`` says which).
    WAITING = "waiting", "waiting"
    #: Delayed (``countdown``/``eta``) beyond the hold limit: the beat releases it when due.
    SCHEDULED = "scheduled", "scheduled"
    #: Published; its current try is queued, running, or waiting for its backoff.
    PENDING = "pending", "pending"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"
    #: A chain step that never ran because an earlier step failed, was cancelled or expired.
    SKIPPED = "skipped", "skipped"
    #: ``cancel()`` before it ran, or the task raised ``TaskCancelled`` after a cancel request.
    CANCELLED = "cancelled", "cancelled"
    #: Not started by its ``expires`` time; it never runs.
    EXPIRED = "expired", "expired"


#: Executions that may still run: a ``unique_key`` is unique among these.
OPEN_STATUSES = ("waiting", "scheduled", "pending")
#: Executions that are done: nothing of them runs any more.
FINISHED_STATUSES = ("success", "failed", "skipped", "cancelled", "expired")


class TryStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"
    #: Cancelled before it was claimed, or stopped by the task raising ``TaskCancelled``.
    CANCELLED = "cancelled", "cancelled"
    #: Its execution expired before this try was claimed.
    EXPIRED = "expired", "expired"


class GroupStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SUCCESS = "success", "success"
    FAILED = "failed", "failed"


class TaskGroup(models.Model):
    """Fan-out/join: ``callback`` is released once ``total_count`` members succeeded."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(
        max_length=16, choices=GroupStatus.choices, default=GroupStatus.PENDING, db_index=True
    )
    total_count = models.PositiveIntegerField()
    succeeded_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    callback = models.ForeignKey(
        "TaskExecution", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: The callback gets the members' values (in member order) as its first argument.
    pass_results = models.BooleanField(default=False)
    #: Positions handed out to members so far (``pass_results`` groups number their members).
    next_position = models.PositiveIntegerField(default=0)
    #: The failure handler (``spec.handler``) enqueued once when the group fails.
    on_failure = models.JSONField(null=True, blank=True)
    #: The execution of that handler, once enqueued.
    failure_handler = models.ForeignKey(
        "TaskExecution", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "task group"

    def __str__(self) -> str:
        return f"group {self.uuid} ({self.succeeded_count}/{self.total_count}, {self.status})"

    @classmethod
    def create(cls, *, callback: Any = None, total_count: int, pass_results: bool = False,
               on_failure: Any = None) -> TaskGroup:
        """Create a group of ``total_count`` members; ``callback`` is a task or a handle from
        ``task.build_chain()``, run once when every member succeeded. With ``pass_results``
        the callback (a task) gets the list of the members' values first, in member order;
        ``on_failure`` (a task) runs once, with the failure, when the group fails.

        Served by ``django_i3tasks.groups.create_group`` through the app config, so this
        module imports nothing above it.
        """
        config: Any = apps.get_app_config("django_i3tasks")
        group: TaskGroup = config.create_group(
            callback=callback, total_count=total_count, pass_results=pass_results,
            on_failure=on_failure,
        )
        return group


class ExecutionQuerySet(models.QuerySet):
    """Named filters of executions, so callers do not spell statuses out by hand."""

    def open(self) -> ExecutionQuerySet:
        """Executions that may still run (waiting, scheduled, pending)."""
        return self.filter(status__in=OPEN_STATUSES)

    def finished(self) -> ExecutionQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def due(self, now: Any) -> ExecutionQuerySet:
        """Scheduled executions whose ``eta`` has come (the beat releases them)."""
        return self.filter(status=ExecutionStatus.SCHEDULED, eta__lte=now)


class TryQuerySet(models.QuerySet):
    """Named filters of tries."""

    def running(self) -> TryQuerySet:
        return self.filter(status=TryStatus.RUNNING)

    def queued(self) -> TryQuerySet:
        return self.filter(status=TryStatus.QUEUED)

    def unstarted_since(self, cutoff: Any) -> TryQuerySet:
        """Queued, due before ``cutoff`` and still not started (its message may be lost)."""
        return self.filter(status=TryStatus.QUEUED, not_before__lt=cutoff)

    def lease_expired_before(self, cutoff: Any) -> TryQuerySet:
        """Running, whose worker's lease ran out before ``cutoff`` (it may have died)."""
        return self.filter(status=TryStatus.RUNNING, lease_expires_at__lt=cutoff)


class TaskExecution(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    task_name = models.CharField(max_length=255)
    queue_name = models.CharField(max_length=100)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING
    )
    max_retries = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    #: Earliest time a scheduled execution may be released (``countdown``/``eta``).
    eta = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: Chain: this execution runs after ``previous`` succeeded.
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_steps"
    )
    #: Set (under a row lock) when a step is chained after this one, so finishing it knows
    #: whether to look for next steps without an extra query.
    has_next = models.BooleanField(default=False)
    group = models.ForeignKey(
        TaskGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    #: Not started by then: the execution expires and never runs (``expires=``).
    expires_at = models.DateTimeField(null=True, blank=True)
    #: A waiting execution (chain step, group callback) whose task has ``expires=``: seconds
    #: from its release to its ``expires_at``, set when it is released.
    expires_after = models.FloatField(null=True, blank=True)
    #: While an execution with this key (not "") may still run, enqueueing it again returns
    #: (a partial unique index over the open statuses decides, also under concurrency).
    unique_key = models.CharField(max_length=255, blank=True, default="")
    #: ``cancel()`` was called while a try ran (or was about to): ``is_cancelled()`` is true
    #: and no further try is written.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    #: ``.pipe()``: the previous step's value is put first in ``args`` when it is released.
    pipe = models.BooleanField(default=False)
    #: Member order in a ``pass_results`` group (``map`` order, else order of enqueueing).
    position = models.PositiveIntegerField(null=True, blank=True)
    #: Failure handlers (``spec.handler`` dicts), each enqueued once when this execution
    #: ends without success (or is skipped after a failed step).
    on_failure = models.JSONField(null=True, blank=True)
    #: A failure handler's execution: the execution it was attached to.
    handler_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="failure_handlers"
    )
    #: The task's ``concurrency_key`` for this call ("" for none): limits count per key.
    concurrency_key = models.CharField(max_length=200, blank=True, default="")
    #: Why a *waiting* execution waits when it is parked by a limit (``concurrency:KEY``,
    #: ``rate:KEY``); "" for a chain step or group callback, and once it runs.
    wait_reason = models.CharField(max_length=255, blank=True, default="")

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        verbose_name = "task execution"
        constraints = [
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=models.Q(status__in=OPEN_STATUSES) & ~models.Q(unique_key=""),
                name="i3_exec_unique_key_open",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="i3_exec_status_created"),
            models.Index(fields=["task_name", "created_at"], name="i3_exec_task_created"),
            models.Index(fields=["task_name", "concurrency_key", "status"],
                         name="i3_exec_task_key_status"),
            models.Index(fields=["created_at"], name="i3_exec_created"),
            models.Index(fields=["status", "eta"], name="i3_exec_status_eta"),
            # Health ("failed in the last hour") and the clean-up's batches (migration 0007).
            models.Index(fields=["status", "finished_at"], name="i3_exec_status_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.uuid} ({self.status})"


class TaskExecutionTry(models.Model):
    execution = models.ForeignKey(TaskExecution, on_delete=models.CASCADE, related_name="tries")
    #: The execution's task, copied when the try is written: the dashboard and
    #: ``i3tasks stats`` read a window of tries without joining their executions. "" for a
    #: try written before migration 0013; those readers then look the execution up.
    task_name = models.CharField(max_length=255, blank=True, default="")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=16, choices=TryStatus.choices, default=TryStatus.QUEUED
    )
    enqueued_at = models.DateTimeField(default=timezone.now)
    #: Backoff: the try is not started before this time.
    not_before = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: While running: a later delivery may take the try over only after this time.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: Changes at every claim; finishing a try requires the token of its claim.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    #: How often the try was claimed (more than 1: a worker died and it was run again).
    claims = models.PositiveSmallIntegerField(default=0)
    #: Last time the beat published this try again (lost-message recovery).
    republished_at = models.DateTimeField(null=True, blank=True)
    #: ``set_progress()`` of the running try: ``{"current", "total", "message"}``.
    progress = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    objects = TryQuerySet.as_manager()

    class Meta:
        verbose_name = "task execution try"
        verbose_name_plural = "task execution tries"
        constraints = [
            models.UniqueConstraint(fields=["execution", "number"], name="i3_try_unique_number"),
        ]
        indexes = [
            models.Index(fields=["status", "not_before"], name="i3_try_status_not_before"),
            # The sweep and the health check find expired leases without reading every
            # running try (migration 0007).
            models.Index(fields=["lease_expires_at"], condition=models.Q(status="running"),
                         name="i3_try_running_lease"),
            # The dashboard and ``i3tasks stats`` read a window of finished tries
            # without reading every try ever kept (migration 0012).
            models.Index(fields=["finished_at"], condition=models.Q(finished_at__isnull=False),
                         name="i3_try_finished"),
        ]

    def __str__(self) -> str:
        return f"try {self.number} of execution {self.execution.uuid} ({self.status})"

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class TaskExecutionResult(models.Model):
    """The value returned by the successful try of an execution."""

    execution = models.OneToOneField(
        TaskExecution, on_delete=models.CASCADE, related_name="result"
    )
    task_try = models.OneToOneField(
        TaskExecutionTry, on_delete=models.CASCADE, related_name="result"
    )
    value = models.JSONField(null=True, blank=True)
    #: The return value was not JSON; ``value`` holds its ``repr``.
    is_repr = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "task execution result"

    def __str__(self) -> str:
        return f"result of {self.execution_id}"


class ScheduleSlot(models.Model):
    """One fired slot of a beat schedule; the unique key makes a slot fire once."""

    schedule_key = models.CharField(max_length=255)
    slot = models.DateTimeField()
    #: The execution the slot enqueued. A uuid, not a foreign key: it is chosen before the
    #: slot is claimed, so claiming and linking are one INSERT.
    execution_uuid = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "schedule slot"
        constraints = [
            models.UniqueConstraint(fields=["schedule_key", "slot"], name="i3_slot_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_key} @ {self.slot.isoformat()}"


class ScheduleState(models.Model):
    """Where one configured schedule stands, so a beat call selects the schedules due now by
    index instead of evaluating every cron expression.

    Only an optimisation: the unique ``ScheduleSlot`` row still decides whether a slot fires,
    so a lost or stale row costs a redundant check, never a duplicate task.
    """

    key = models.CharField(max_length=255, unique=True)
    #: ``"<time zone> <cron>"`` the row was computed for; a change resets the row.
    spec = models.CharField(max_length=400)
    #: The earliest slot not yet handled (the epoch for a row never evaluated).
    next_fire = models.DateTimeField()
    #: The latest slot claimed (or found claimed) for this schedule.
    last_slot = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "schedule state"
        indexes = [models.Index(fields=["next_fire"], name="i3_state_next_fire")]

    def __str__(self) -> str:
        return f"{self.key} next {self.next_fire.isoformat()}"


def _default_timezone() -> str:
    """The project's ``TIME_ZONE`` (``UTC`` when unset)."""
    from django.conf import settings

    return str(getattr(settings, "TIME_ZONE", None) or "UTC")


#: ``PeriodicTask`` has a field named ``timezone``, which hides the module in its body.
_now = timezone.now


class PeriodicTask(models.Model):
    """A cron schedule kept in the database and edited in the admin; the beat runs these rows
    beside the settings ``Schedule``s, with the same once-per-slot claim (``ScheduleSlot``).

    ``last_run_at`` and ``next_run_at`` are read from the row's ``ScheduleState`` (the beat
    writes nothing else per row, so 10,000 rows cost what 10,000 settings schedules cost).

    ``revision`` grows at every ``save()``: the beat compares the table's count, highest id
    and revision sum with what it read last, so an edit takes effect at the next beat call
    without reading every row each minute. A ``QuerySet.update()`` that changes a schedule
    must raise ``revision`` too (``revision=F("revision") + 1``).
    """

    name = models.CharField(max_length=200, unique=True)
    task_name = models.CharField(max_length=255, help_text="A registered task's dotted name.")
    cron = models.CharField(max_length=100, help_text='Five fields, e.g. "*/5 * * * *".')
    timezone = models.CharField(max_length=64, default=_default_timezone)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue_name = models.CharField(max_length=100, blank=True, default="",
                                  help_text="Empty: the task's own queue.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    revision = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=_now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "periodic task"
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.cron} {self.timezone})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:
            self.revision = 1
            super().save(*args, **kwargs)
            return
        # Concurrent saves of one row must each raise the sum the beat compares.
        self.revision = models.F("revision") + 1
        super().save(*args, **kwargs)
        self.refresh_from_db(fields=["revision"])

    @property
    def schedule_key(self) -> str:
        """The key of its ``ScheduleState`` and ``ScheduleSlot`` rows (stable across renames;
        settings schedules use their names)."""
        return f"periodic:{self.pk}"

    @property
    def last_run_at(self) -> Any:
        """The latest slot the beat claimed for this row (``None`` before the first)."""
        return self._beat_state()[1]

    @property
    def next_run_at(self) -> Any:
        """The next slot: the beat's, or computed from the cron before the beat saw the row;
        ``None`` when disabled."""
        if not self.enabled:
            return None
        next_fire = self._beat_state()[0]
        if next_fire is None or next_fire.year <= 1970:  # not evaluated yet
            return self._next_slot()
        return next_fire

    def _beat_state(self) -> tuple[Any, Any]:
        """``(next_fire, last_slot)`` of its state row; the admin annotates them (one query
        per page), else one query."""
        if hasattr(self, "state_next_fire"):
            return self.state_next_fire, getattr(self, "state_last_slot", None)
        if self.pk is None:
            return None, None
        row = ScheduleState.objects.filter(key=self.schedule_key).values_list(
            "next_fire", "last_slot").first()
        return row or (None, None)

    def _next_slot(self) -> Any:
        """The first slot after now, or ``None`` when the cron or time zone is not valid."""
        import zoneinfo
        from datetime import datetime

        try:
            from croniter import croniter

            local = timezone.now().astimezone(zoneinfo.ZoneInfo(self.timezone))
            return croniter(self.cron, local).get_next(datetime)
        except Exception:  # noqa: BLE001 - invalid input: the admin form names the reason
            return None


class Dashboard(TaskExecution):
    """No table of its own: it gives the admin dashboard its place
    (``admin/django_i3tasks/dashboard/``) and its line in the app's index."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"
