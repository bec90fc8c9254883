"""The 0.x import path of the decorator: ``from django_i3tasks.utils import TaskDecorator``.

Kept so projects written against 0.0.x/0.1.x upgrade without touching their imports; new
code imports from ``django_i3tasks``.
"""

from __future__ import annotations

from .task import Task, TaskDecorator, TaskMetadata

__all__ = ["Task", "TaskDecorator", "TaskMetadata"]
