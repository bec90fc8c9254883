"""Rows that tasks write, so tests can count effects across processes (worker subprocesses)."""

from django.db import models


class Effect(models.Model):
    """One row per run of a task body; deliberately not unique, so a double run shows."""

    key = models.CharField(max_length=100, db_index=True)
    pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key} (pid {self.pid})"
