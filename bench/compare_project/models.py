"""The design's floor: the rows the guarantees need, and nothing else."""

from django.db import models


class FloorTry(models.Model):
    """One try: claimed by one conditional UPDATE, finished by one transaction."""

    status = models.CharField(max_length=16, default="queued")
    claim = models.UUIDField(null=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"floor try {self.pk} ({self.status})"


class FloorResult(models.Model):
    task_try = models.OneToOneField(FloorTry, on_delete=models.CASCADE)
    value = models.JSONField(null=True)

    def __str__(self) -> str:
        return f"floor result of {self.task_try_id}"
