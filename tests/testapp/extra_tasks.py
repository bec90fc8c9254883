"""A task module not named ``tasks``: registered only through ``I3TASKS.task_modules``."""

from django_i3tasks import TaskDecorator


@TaskDecorator
def outside_tasks_module(value):
    return value
