"""The state machine of executions, tries and groups: the only code that writes a status.

Every transition is one conditional write (an ``UPDATE ... WHERE status = ...``, a unique row,
or an ``UPDATE ... RETURNING`` that reads what it changed), so a duplicate, late or concurrent
delivery finds nothing left to change and changes nothing. The transitions take validated
``ExecutionSpec`` values, ids and messages; they never see a ``Task`` or look one up.

- ``enqueue``: write executions and send their first tries (enqueue, release, republish);
- ``tries``: claim a try, record its outcome, give it back;
- ``graph``: chains and groups (what an execution's end releases, skips or counts, and the
  values ``pipe`` and ``pass_results`` hand over);
- ``handlers``: failure handlers (what an end without success enqueues);
- ``admission``: concurrency and rate limits, decided in the claim;
- ``control``: cancel, expire, progress and the admin's retry.

Each module's docstring draws the part of the state diagram it implements. Messages go to the
outbox, which sends them after the transaction commits; signals follow the transitions, so
they fire once per change.
"""

from .admission import Limits
from .control import cancel, cancel_requested, expire, retry, write_progress
from .enqueue import enqueue, enqueue_many, release, republish
from .graph import add_step, create_group, member_failed, member_succeeded, release_next
from .handlers import attach as attach_failure_handler
from .tries import (
    claim,
    error_fields,
    fail_unrunnable,
    record_failure,
    record_success,
    release_claim,
)

__all__ = [
    "Limits", "add_step", "attach_failure_handler", "cancel", "cancel_requested", "claim",
    "create_group", "enqueue",
    "enqueue_many", "error_fields", "expire", "fail_unrunnable", "member_failed",
    "member_succeeded", "record_failure", "record_success", "release", "release_claim",
    "release_next", "republish", "retry", "write_progress",
]
