from django.db import models


class Effect(models.Model):
    """One row per run of the task body, like ``tests.testapp.models.Effect``."""

    key = models.CharField(max_length=100, db_index=True)
    pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key} (pid {self.pid})"
