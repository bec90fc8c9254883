"""The adaptation of Django's ``tests/tasks`` that runs it against ``PubSubBackend``.

Small and textual, so that it reads as a list of what differs: every rule must match in the
file it is for, so a Django release whose tests changed stops the conformance leg with the
rule that no longer applies, instead of silently testing less.

- Backend names: Django's ImmediateBackend and DummyBackend become ``PubSubBackend`` (by dotted
  path in ``TASKS`` and by name in ``isinstance`` checks). The custom backends of
  ``test_custom_backend`` are built on ``PubSubBackend`` (``CustomBackendNoEnqueue`` stays on
  ``BaseTaskBackend``: it tests that the abstract ``enqueue`` is required).
- ``TestCase`` instead of ``SimpleTestCase``: the backend writes rows.
- Results are read with ``get_result`` from the rows (``support``), where the tests read
  ``DummyBackend.results`` or clear it; where a test sets a stored result's status by hand, the
  recorded message is run instead (what a worker would do), so the stored result changes.
"""

from __future__ import annotations

import re

PUBSUB = "django_i3tasks.backends.PubSubBackend"
SUPPORT_IMPORT = "from tests.conformance import support\n"

#: (file, old, new) replaced everywhere in that file ("*": every file that has it).
TEXT: list[tuple[str, str, str]] = [
    ("*", "django.tasks.backends.immediate.ImmediateBackend", PUBSUB),
    ("*", "django.tasks.backends.dummy.DummyBackend", PUBSUB),
    ("*", "from django.tasks.backends.immediate import ImmediateBackend",
     "from django_i3tasks.backends import PubSubBackend"),
    ("*", "from django.tasks.backends.dummy import DummyBackend",
     "from django_i3tasks.backends import PubSubBackend"),
    ("test_tasks.py", "default_task_backend.clear()", "support.clear_results()"),
    ("test_dummy_backend.py", "default_task_backend.clear()", "support.clear_results()"),
    ("test_custom_backend.py", "class CustomBackend(BaseTaskBackend):",
     "class CustomBackend(PubSubBackend):"),
    ("test_custom_backend.py", "class CustomTaskBackend(BaseTaskBackend):",
     "class CustomTaskBackend(PubSubBackend):"),
    ("test_custom_backend.py", "from django.tasks.backends.base import BaseTaskBackend\n",
     "from django.tasks.backends.base import BaseTaskBackend\n\n"
     "from django_i3tasks.backends import PubSubBackend\n"),
]

#: (file, pattern, replacement) as regular expressions (word boundaries).
WORDS: list[tuple[str, str, str]] = [
    ("*", r"\bImmediateBackend\b", "PubSubBackend"),
    ("*", r"\bDummyBackend\b", "PubSubBackend"),
    ("*", r"\bSimpleTestCase\b", "TestCase"),
]

#: (file, old, new in a ``def``, new in an ``async def``): the store of DummyBackend is rows.
IN_FUNCTIONS: list[tuple[str, str, str, str]] = [
    ("test_tasks.py", "default_task_backend.results",
     "support.stored_results()", "(await support.astored_results())"),
    ("test_dummy_backend.py", "default_task_backend.results",
     "support.stored_results()", "(await support.astored_results())"),
    ("test_dummy_backend.py",
     'object.__setattr__(enqueued_result, "status", TaskResultStatus.SUCCESSFUL)',
     "support.run_recorded()", "await support.arun_recorded()"),
]

_DEF = re.compile(r"^    (async def|def) ", re.MULTILINE)


class RuleDidNotApply(Exception):
    """A rule matched nothing: the Django release's tests differ from what it was written for."""


def _applies(rule_file: str, name: str, text: str, old: str) -> bool:
    if rule_file == "*":
        return old in text
    return rule_file == name


def _in_functions(text: str, old: str, sync: str, asynchronous: str) -> str:
    """Replace ``old`` with ``sync`` inside ``def``s and with ``asynchronous`` inside
    ``async def``s (methods of the test classes)."""
    starts = [match.start() for match in _DEF.finditer(text)]
    pieces = [text[:starts[0]] if starts else text]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        chunk = text[start:end]
        new = asynchronous if chunk.startswith("    async def") else sync
        pieces.append(chunk.replace(old, new))
    return "".join(pieces)


def adapt(name: str, text: str) -> str:
    """The adapted source of Django's ``tests/tasks/<name>``; ``RuleDidNotApply`` when a rule
    for this file matches nothing."""
    uses_support = False

    def check(applied: bool, rule: object) -> None:
        if not applied:
            raise RuleDidNotApply(f"{name}: the rule {rule!r} matched nothing")

    for rule_file, old, new in TEXT:
        if _applies(rule_file, name, text, old):
            check(old in text, (rule_file, old))
            text = text.replace(old, new)
            uses_support |= "support." in new
    for rule_file, pattern, replacement in WORDS:
        if rule_file in ("*", name):
            text = re.sub(pattern, replacement, text)
    for rule_file, old, sync, asynchronous in IN_FUNCTIONS:
        if rule_file == name:
            check(old in text, (rule_file, old))
            text = _in_functions(text, old, sync, asynchronous)
            uses_support = True
    return SUPPORT_IMPORT + text if uses_support else text
