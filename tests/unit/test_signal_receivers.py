"""Which receivers of a signal are the package's own: told by their ``dispatch_uid``."""

from __future__ import annotations

from typing import Any

from django_i3tasks import signals


def test_package_receivers_only_reads_dispatch_uids() -> None:
    signal = signals.Signal()
    assert signals.package_receivers_only(signal)

    def mine(sender: Any, **kwargs: Any) -> None:
        pass

    signal.connect(mine, dispatch_uid="django_i3tasks.test.mine")
    assert signals.package_receivers_only(signal)
    signal.connect(mine, dispatch_uid="project.audit")
    assert not signals.package_receivers_only(signal)
    signal.disconnect(dispatch_uid="project.audit")
    signal.connect(mine)  # no dispatch_uid: a project receiver
    assert not signals.package_receivers_only(signal)
