"""Creating and updating the topics and subscriptions the settings describe.

Idempotent: what exists and matches is left alone, what differs is updated (push endpoint,
OIDC token, ack deadline, retry policy, dead-letter policy), what is missing is created.
``check_pubsub`` only compares (the release gate ``i3tasks_ensure_pubsub --check``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .conf import get_settings, pubsub_config, subscription_id, topic_id
from .transport import admin_publisher_client, bounded, subscriber_client
from .types import AnyQueue, PushQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    verb: str  # "create", "update", "ok"
    kind: str  # "topic", "subscription"
    name: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.verb:6} {self.kind:12} {self.name}{extra}"


def desired_subscription(queue: AnyQueue) -> Any:
    from google.protobuf import duration_pb2
    from google.pubsub_v1 import types as pb

    config = pubsub_config()
    push_config = pb.PushConfig()
    if isinstance(queue, PushQueue) and queue.push_endpoint:
        push_config = pb.PushConfig(push_endpoint=queue.push_endpoint)
        if queue.oidc_service_account_email:
            push_config.oidc_token = pb.PushConfig.OidcToken(
                service_account_email=queue.oidc_service_account_email,
                audience=queue.oidc_audience or "",
            )
    subscription = pb.Subscription(
        name=config.subscription_path(queue),
        topic=config.topic_path(queue),
        push_config=push_config,
        ack_deadline_seconds=queue.ack_deadline_seconds,
        retry_policy=pb.RetryPolicy(
            minimum_backoff=duration_pb2.Duration(seconds=queue.min_retry_backoff_seconds),
            maximum_backoff=duration_pb2.Duration(seconds=queue.max_retry_backoff_seconds),
        ),
    )
    if queue.dead_letter_topic:
        subscription.dead_letter_policy = pb.DeadLetterPolicy(
            dead_letter_topic=dead_letter_path(queue),
            max_delivery_attempts=queue.max_delivery_attempts,
        )
    return subscription


def dead_letter_path(queue: AnyQueue) -> str:
    """The full path of the queue's dead-letter topic (a bare name is in this project)."""
    name = queue.dead_letter_topic or ""
    return name if name.startswith("projects/") else (
        f"projects/{pubsub_config().project_id}/topics/{name}"
    )


def _seconds(value: Any) -> Any:
    """A Duration field's seconds (proto-plus gives a timedelta), for comparing and printing."""
    return value.total_seconds() if hasattr(value, "total_seconds") else value


def _compared(sub: Any) -> dict[str, tuple[str, Any]]:
    """What the settings decide about a subscription, by name, with the field of the update
    mask that changes it (``""``: Pub/Sub cannot change it in place)."""
    push, dead_letter = sub.push_config, sub.dead_letter_policy
    return {
        "topic": ("", sub.topic),
        "push_endpoint": ("push_config", push.push_endpoint),
        "oidc_service_account_email": ("push_config", push.oidc_token.service_account_email),
        "oidc_audience": ("push_config", push.oidc_token.audience),
        "ack_deadline_seconds": ("ack_deadline_seconds", sub.ack_deadline_seconds),
        "min_retry_backoff_seconds": ("retry_policy", _seconds(sub.retry_policy.minimum_backoff)),
        "max_retry_backoff_seconds": ("retry_policy", _seconds(sub.retry_policy.maximum_backoff)),
        "dead_letter_topic": ("dead_letter_policy", dead_letter.dead_letter_topic),
        "max_delivery_attempts": ("dead_letter_policy", dead_letter.max_delivery_attempts),
        "filter": ("", sub.filter),
    }


def _changed(current: Any, desired: Any) -> dict[str, tuple[Any, Any]]:
    """The compared fields whose value differs: ``{name: (current, desired)}``."""
    have, want = _compared(current), _compared(desired)
    return {name: (have[name][1], value) for name, (_, value) in want.items()
            if have[name][1] != value}


def _differences(current: Any, desired: Any) -> list[str]:
    """The update-mask fields that bring ``current`` to ``desired``."""
    masks = _compared(desired)
    return list(dict.fromkeys(masks[name][0] for name in _changed(current, desired)
                              if masks[name][0]))


@dataclass(frozen=True)
class Difference:
    """One way Pub/Sub differs from the settings (``--check`` prints each one)."""

    kind: str  # "topic", "subscription"
    name: str
    field: str
    current: Any
    desired: Any

    def __str__(self) -> str:
        if self.field == "exists":
            return f"{self.kind} {self.name} is missing"
        fix = "" if self.field not in ("topic", "filter") else (
            " (Pub/Sub cannot change it in place: delete the subscription, then run "
            "i3tasks_ensure_pubsub)")
        return (f"{self.kind} {self.name}: {self.field} is {self.current!r}, "
                f"the settings say {self.desired!r}{fix}")


def check_pubsub(*, timeout: float = 30.0) -> list[Difference]:
    """Every difference between Pub/Sub and the settings; empty when all is in sync. Reads
    only, so it can gate a release."""
    from google.api_core.exceptions import NotFound

    limits = bounded(timeout)
    publisher = admin_publisher_client()
    subscriber = subscriber_client()
    found: list[Difference] = []
    try:
        for path in _topic_paths():
            try:
                publisher.get_topic(topic=path, **limits)
            except NotFound:
                found.append(Difference("topic", path, "exists", "missing", "present"))
        for queue in get_settings().queues:
            desired = desired_subscription(queue)
            try:
                current = subscriber.get_subscription(subscription=desired.name, **limits)
            except NotFound:
                found.append(Difference("subscription", desired.name, "exists", "missing",
                                        "present"))
                continue
            found += [Difference("subscription", desired.name, name, have, want)
                      for name, (have, want) in _changed(current, desired).items()]
    finally:
        subscriber.close()
    return found


def _topic_paths() -> list[str]:
    """The queues' topics and dead-letter topics, each once."""
    config = pubsub_config()
    topics = []
    for queue in get_settings().queues:
        topics.append(config.topic_path(queue))
        if queue.dead_letter_topic:
            topics.append(dead_letter_path(queue))
    return list(dict.fromkeys(topics))


def ensure_pubsub(*, dry_run: bool = False, timeout: float = 30.0) -> list[Action]:
    """Make Pub/Sub match the settings; with ``dry_run`` only say what would change."""
    from google.api_core.exceptions import NotFound
    from google.protobuf import field_mask_pb2


    limits = bounded(timeout)
    publisher = admin_publisher_client()
    subscriber = subscriber_client()
    actions: list[Action] = []
    try:
        for path in _topic_paths():
            try:
                publisher.get_topic(topic=path, **limits)
                actions.append(Action("ok", "topic", path))
            except NotFound:
                if not dry_run:
                    publisher.create_topic(name=path, **limits)
                actions.append(Action("create", "topic", path))
        for queue in get_settings().queues:
            desired = desired_subscription(queue)
            try:
                current = subscriber.get_subscription(subscription=desired.name, **limits)
            except NotFound:
                if not dry_run:
                    subscriber.create_subscription(request=desired, **limits)
                kind = "push" if desired.push_config.push_endpoint else "pull"
                actions.append(Action("create", "subscription", desired.name, kind))
                continue
            if current.topic != desired.topic:
                raise RuntimeError(
                    f"subscription {desired.name} is attached to {current.topic}, not "
                    f"{desired.topic}; delete it or rename the queue's subscription"
                )
            changed = _differences(current, desired)
            if changed and not dry_run:
                _update(subscriber, desired, changed, limits, field_mask_pb2)
            actions.append(
                Action("update", "subscription", desired.name, ", ".join(changed))
                if changed else Action("ok", "subscription", desired.name)
            )
    finally:
        subscriber.close()
    return actions


def _update(subscriber: Any, desired: Any, changed: list[str], limits: dict, fm: Any) -> None:
    if "push_config" in changed:
        # ModifyPushConfig is the one call every Pub/Sub server (the emulator too) supports.
        subscriber.modify_push_config(
            subscription=desired.name, push_config=desired.push_config, **limits
        )
    rest = [name for name in changed if name != "push_config"]
    if rest:
        subscriber.update_subscription(
            subscription=desired, update_mask=fm.FieldMask(paths=rest), **limits
        )


__all__ = ["Action", "Difference", "check_pubsub", "desired_subscription", "ensure_pubsub",
           "subscription_id", "topic_id"]
