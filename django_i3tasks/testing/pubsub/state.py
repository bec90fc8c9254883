"""The emulator's state: topics, subscriptions, their messages and leases, and the clock.

Guarantees (what the services built on it promise):

- One lock guards all state; every operation is atomic with respect to every other.
- A publish reaches every subscription attached to the topic when it is published (and whose
  filter, if any, matches); a message stays on a subscription until it is acknowledged,
  dead-lettered, or the subscription is deleted or detached.
- A delivered message is leased until its deadline. Nack (deadline 0), lease expiry and a
  failed push are failed deliveries. A pulled message is available again at once; a pushed
  one after the subscription's retry policy backoff (``min * 2**(failures-1)``, capped at
  ``max``; real Pub/Sub documents that backoff for pull subscriptions too, Google's emulator
  applies it to push only, and so does this one).
- With a dead-letter policy, a message whose ``max_delivery_attempts``-th delivery failed is
  published to the dead-letter topic (with the ``CloudPubSubDeadLetterSource*`` attributes)
  and removed from the subscription. ``delivery_attempt`` counts deliveries from 1.
- Available messages are delivered oldest first. With message ordering enabled, a message
  with an ordering key is not delivered while an earlier message with that key is leased or
  waiting for redelivery, so each key is delivered in publish order, one at a time.
- An acknowledgement of any of a message's ack ids removes it (acks are best effort in real
  Pub/Sub too); a deadline change applies only to the message's current lease.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from . import proto
from .filters import compile_filter
from .proto import PubSubError, invalid, not_found

DEFAULT_ACK_DEADLINE = 10
DEFAULT_MIN_BACKOFF = 10.0
DEFAULT_MAX_BACKOFF = 600.0
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
DELETED_TOPIC = "_deleted-topic_"


@dataclass(eq=False)
class Entry:
    """One message on one subscription."""

    message: Any  # proto.PubsubMessage, shared by the subscriptions of the topic; never mutated
    seq: int
    size: int
    attempts: int = 0  # deliveries so far
    failures: int = 0  # consecutive failed deliveries (the backoff exponent)
    state: str = "ready"  # ready | delayed | leased | gone
    ack_id: str = ""  # the current lease's ack id
    deadline: float = 0.0
    available_at: float = 0.0
    holder: Holder | None = None
    confirmed: bool = False  # the holder changed the lease's deadline since delivery


@dataclass(eq=False)
class Holder:
    """Who holds leases: a streaming pull stream (with its flow control), a push sender, or
    a unary pull (no limits)."""

    max_messages: int = 0  # 0: no limit
    max_bytes: int = 0
    ack_deadline: int = DEFAULT_ACK_DEADLINE
    outstanding: int = 0
    outstanding_bytes: int = 0
    closed: bool = False

    def room(self) -> tuple[int, int]:
        """How many more messages and bytes it may hold (a large number when unlimited)."""
        unlimited = 1 << 40
        messages = self.max_messages - self.outstanding if self.max_messages > 0 else unlimited
        size = self.max_bytes - self.outstanding_bytes if self.max_bytes > 0 else unlimited
        return messages, size


@dataclass(eq=False)
class Sub:
    """A subscription and its messages."""

    pb: Any  # proto.Subscription
    index: int
    cond: threading.Condition
    ready: list[tuple[int, Entry]] = field(default_factory=list)  # heap by seq
    leased: dict[str, Entry] = field(default_factory=dict)
    entries: dict[int, Entry] = field(default_factory=dict)  # seq -> entry, all not gone
    key_holds: dict[str, int] = field(default_factory=dict)
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    deliveries: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    matches: Callable[[dict[str, str]], bool] = lambda attributes: True
    deleted: bool = False

    @property
    def name(self) -> str:
        return str(self.pb.name)

    @property
    def ordered(self) -> bool:
        return bool(self.pb.enable_message_ordering)

    def hold_key(self, entry: Entry, delta: int) -> None:
        key = entry.message.ordering_key
        if self.ordered and key:
            count = self.key_holds.get(key, 0) + delta
            if count > 0:
                self.key_holds[key] = count
            else:
                self.key_holds.pop(key, None)


class Broker:
    """All topics and subscriptions of one emulator, with the clock that expires leases and
    ends backoff delays. ``on_push_change(sub)`` is called (under the lock) when a
    subscription becomes push, stops being push, or is deleted."""

    def __init__(self, on_push_change: Callable[[Sub], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.topics: dict[str, Any] = {}
        self.subs: dict[str, Sub] = {}
        self._topic_subs: dict[str, set[str]] = {}
        self._message_ids = itertools.count(1)
        self._sub_indexes = itertools.count(1)
        self._timers: list[tuple[float, int, Sub, Entry, str]] = []
        self._timer_seq = itertools.count()
        self._clock = threading.Condition(self.lock)
        self.closed = False
        self._on_push_change = on_push_change or (lambda sub: None)
        self._clock_thread = threading.Thread(
            target=self._run_clock, name="pubsub-emulator-clock", daemon=True
        )
        self._clock_thread.start()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for sub in self.subs.values():
                sub.deleted = True
                sub.cond.notify_all()
            self._clock.notify_all()

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, topic: Any) -> Any:
        proto.check_name(topic.name, "topics")
        with self.lock:
            if topic.name in self.topics:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            stored = proto.Topic()
            stored.CopyFrom(topic)
            self.topics[topic.name] = stored
            self._topic_subs[topic.name] = set()
            return stored

    def get_topic(self, name: str) -> Any:
        with self.lock:
            return self._topic(name)

    def _topic(self, name: str) -> Any:
        try:
            return self.topics[name]
        except KeyError:
            raise not_found("Topic") from None

    def update_topic(self, topic: Any, paths: list[str]) -> Any:
        if not paths:
            raise invalid("The update_mask in the UpdateTopicRequest must be set, and must "
                          "contain a non-empty paths list.")
        with self.lock:
            stored = self._topic(topic.name)
            updated = proto.Topic()
            updated.CopyFrom(stored)
            _apply_mask(topic, updated, paths, immutable={"name"})
            self.topics[topic.name] = updated
            return updated

    def delete_topic(self, name: str) -> None:
        with self.lock:
            self._topic(name)
            del self.topics[name]
            for sub_name in self._topic_subs.pop(name, set()):
                self.subs[sub_name].pb.topic = DELETED_TOPIC

    def list_topics(self, project: str) -> list[str]:
        prefix = proto.project_of(project) + "/topics/"
        with self.lock:
            return sorted(name for name in self.topics if name.startswith(prefix))

    def topic_subscriptions(self, topic: str) -> list[str]:
        with self.lock:
            self._topic(topic)
            return sorted(self._topic_subs[topic])

    # -- subscriptions --------------------------------------------------------------------

    def create_subscription(self, subscription: Any) -> Any:
        proto.check_name(subscription.name, "subscriptions")
        stored = proto.Subscription()
        stored.CopyFrom(subscription)
        _normalize(stored)
        matches = compile_filter(stored.filter)
        with self.lock:
            if stored.name in self.subs:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            if stored.topic not in self.topics:
                raise PubSubError(grpc.StatusCode.NOT_FOUND,
                                  "Subscription topic does not exist")
            sub = Sub(pb=stored, index=next(self._sub_indexes),
                      cond=threading.Condition(self.lock), matches=matches)
            self.subs[stored.name] = sub
            self._topic_subs[stored.topic].add(stored.name)
            if stored.push_config.push_endpoint:
                self._on_push_change(sub)
            return stored

    def sub(self, name: str) -> Sub:
        """The subscription (caller holds the lock)."""
        sub = self.subs.get(name)
        if sub is None:
            raise not_found("Subscription")
        return sub

    def get_subscription(self, name: str) -> Any:
        with self.lock:
            return self.sub(name).pb

    def update_subscription(self, subscription: Any, paths: list[str]) -> Any:
        if not paths:
            raise invalid("The update_mask in the UpdateSubscriptionRequest must be set, and "
                          "must contain a non-empty paths list.")
        with self.lock:
            sub = self.sub(subscription.name)
            updated = proto.Subscription()
            updated.CopyFrom(sub.pb)
            _apply_mask(subscription, updated, paths, immutable={
                "name", "topic", "enable_message_ordering", "filter",
                "enable_exactly_once_delivery"})
            _normalize(updated)
            self._replace(sub, updated)
            return updated

    def modify_push_config(self, name: str, push_config: Any) -> None:
        with self.lock:
            sub = self.sub(name)
            updated = proto.Subscription()
            updated.CopyFrom(sub.pb)
            updated.push_config.CopyFrom(push_config)
            self._replace(sub, updated)

    def _replace(self, sub: Sub, updated: Any) -> None:
        was_push = bool(sub.pb.push_config.push_endpoint)
        sub.pb = updated
        if was_push != bool(updated.push_config.push_endpoint):
            self._on_push_change(sub)
        sub.cond.notify_all()

    def delete_subscription(self, name: str) -> None:
        with self.lock:
            sub = self.sub(name)
            del self.subs[name]
            self._topic_subs.get(sub.pb.topic, set()).discard(name)
            sub.deleted = True
            sub.entries.clear()
            sub.ready.clear()
            sub.leased.clear()
            self._on_push_change(sub)
            sub.cond.notify_all()

    def detach_subscription(self, name: str) -> None:
        with self.lock:
            sub = self.sub(name)
            self._topic_subs.get(sub.pb.topic, set()).discard(name)
            sub.pb.detached = True
            sub.pb.topic = DELETED_TOPIC
            for entry in sub.entries.values():
                entry.state = "gone"
            sub.entries.clear()
            sub.ready.clear()
            sub.leased.clear()
            sub.key_holds.clear()

    def list_subscriptions(self, project: str) -> list[Any]:
        prefix = proto.project_of(project) + "/subscriptions/"
        with self.lock:
            return [self.subs[name].pb for name in sorted(self.subs) if name.startswith(prefix)]

    # -- messages -------------------------------------------------------------------------

    def publish(self, topic: str, messages: Iterable[Any]) -> list[str]:
        messages = list(messages)
        if not messages:
            raise invalid("No messages in the request")
        for message in messages:
            if not message.data and not message.attributes:
                raise invalid("Some messages are empty")
            if message.ByteSize() > proto.MAX_MESSAGE_BYTES:
                raise invalid("A message is larger than the 10 MB limit")
        with self.lock:
            self._topic(topic)
            return [self._publish(topic, message) for message in messages]

    def _publish(self, topic: str, message: Any) -> str:
        """Store one message on every attached subscription (caller holds the lock)."""
        stored = proto.PubsubMessage()
        stored.CopyFrom(message)
        stored.message_id = str(next(self._message_ids))
        stored.publish_time.CopyFrom(_now_timestamp())
        size = stored.ByteSize()
        for name in self._topic_subs.get(topic, ()):
            sub = self.subs[name]
            if not sub.matches(stored.attributes):
                continue
            entry = Entry(message=stored, seq=next(sub.seqs), size=size)
            sub.entries[entry.seq] = entry
            heapq.heappush(sub.ready, (entry.seq, entry))
            sub.cond.notify_all()
        return str(stored.message_id)

    def take(self, sub: Sub, holder: Holder, limit: int, deadline_seconds: int) -> list[Any]:
        """Lease up to ``limit`` available messages to ``holder`` within its flow control
        (at least one when it holds none); ReceivedMessages. Caller holds the lock."""
        room, room_bytes = holder.room()
        limit = min(limit, room)
        taken: list[Any] = []
        skipped: list[tuple[int, Entry]] = []
        now = time.monotonic()
        dead_lettering = bool(sub.pb.dead_letter_policy.dead_letter_topic)
        while sub.ready and len(taken) < limit:
            seq, entry = heapq.heappop(sub.ready)
            if entry.state != "ready":
                continue
            if sub.ordered and entry.message.ordering_key in sub.key_holds:
                skipped.append((seq, entry))
                continue
            if entry.size > room_bytes and (taken or holder.outstanding):
                skipped.append((seq, entry))
                break
            room_bytes -= entry.size
            entry.attempts += 1
            entry.state = "leased"
            entry.ack_id = f"{sub.index}-{entry.seq}-{next(sub.deliveries)}"
            entry.holder = holder
            entry.confirmed = False
            holder.outstanding += 1
            holder.outstanding_bytes += entry.size
            sub.leased[entry.ack_id] = entry
            sub.hold_key(entry, +1)
            self._set_deadline(sub, entry, now + deadline_seconds)
            received = proto.ReceivedMessage(ack_id=entry.ack_id)
            received.message.CopyFrom(entry.message)
            if dead_lettering:
                received.delivery_attempt = entry.attempts
            taken.append(received)
        for item in skipped:
            heapq.heappush(sub.ready, item)
        return taken

    def has_ready(self, sub: Sub) -> bool:
        """Whether ``take`` could find a message now, flow control aside (caller holds the
        lock)."""
        if not sub.ordered:
            return bool(sub.ready)
        return any(entry.message.ordering_key not in sub.key_holds
                   for _, entry in sub.ready if entry.state == "ready")

    def acknowledge(self, sub: Sub, ack_ids: Iterable[str]) -> None:
        """Forget the messages (caller holds the lock)."""
        for ack_id in ack_ids:
            entry = sub.entries.get(_seq_of(ack_id, sub))
            if entry is None or entry.state == "gone":
                continue
            self._end_lease(sub, entry)
            if entry.state in ("leased", "delayed"):
                sub.hold_key(entry, -1)
            entry.state = "gone"
            del sub.entries[entry.seq]
        sub.cond.notify_all()

    def modify_deadline(self, sub: Sub, ack_ids: Iterable[str], seconds: int) -> None:
        """Extend (or with 0, end as a failed delivery) current leases (caller holds the
        lock)."""
        if not 0 <= seconds <= 600:
            raise invalid(f"Invalid ack deadline: {seconds} (must be between 0 and 600)")
        now = time.monotonic()
        for ack_id in ack_ids:
            _seq_of(ack_id, sub)
            entry = sub.leased.get(ack_id)
            if entry is None:
                continue
            entry.confirmed = True
            if seconds == 0:
                self.fail(sub, entry)
            else:
                self._set_deadline(sub, entry, now + seconds)

    def forget_unconfirmed(self, sub: Sub, holder: Holder) -> None:
        """A stream closed: what it was sent but never confirmed (the client library changes
        the deadline of every message it receives) probably never reached the client, so it
        is available again at once, and that delivery does not count (caller holds the
        lock)."""
        for entry in [e for e in sub.leased.values() if e.holder is holder and not e.confirmed]:
            self._end_lease(sub, entry)
            entry.attempts -= 1
            entry.state = "ready"
            sub.hold_key(entry, -1)
            heapq.heappush(sub.ready, (entry.seq, entry))
        sub.cond.notify_all()

    def fail(self, sub: Sub, entry: Entry, *, push: bool = False) -> None:
        """A failed delivery of a leased message: dead-letter it, or make it available again
        after the backoff (caller holds the lock)."""
        self._end_lease(sub, entry)
        entry.failures += 1
        policy = sub.pb.dead_letter_policy
        if policy.dead_letter_topic and entry.attempts >= policy.max_delivery_attempts and (
            policy.dead_letter_topic in self.topics
        ):
            self._dead_letter(sub, entry)
            return
        delay = self._backoff(sub, entry, push)
        if delay <= 0:
            entry.state = "ready"
            sub.hold_key(entry, -1)
            heapq.heappush(sub.ready, (entry.seq, entry))
            sub.cond.notify_all()
        else:
            entry.state = "delayed"  # keeps its ordering key held
            entry.available_at = time.monotonic() + delay
            self._schedule(entry.available_at, sub, entry, "ready")

    def _backoff(self, sub: Sub, entry: Entry, push: bool) -> float:
        """Seconds before a failed delivery is retried. Pulled messages come back at once
        (as with Google's emulator, and as the pull contract here expects); pushes follow the
        retry policy, or without one are retried at once the first time, then after a short
        growing pause (up to 1 s) so a failing endpoint is not hammered in a tight loop."""
        if not push:
            return 0.0
        if sub.pb.HasField("retry_policy"):
            policy = sub.pb.retry_policy
            low = _seconds(policy.minimum_backoff) if policy.HasField("minimum_backoff") \
                else DEFAULT_MIN_BACKOFF
            high = _seconds(policy.maximum_backoff) if policy.HasField("maximum_backoff") \
                else DEFAULT_MAX_BACKOFF
            return float(min(high, low * 2 ** min(entry.failures - 1, 30)))
        return min(1.0, 0.025 * 2 ** min(entry.failures - 1, 10)) if entry.failures > 1 \
            else 0.0

    def _dead_letter(self, sub: Sub, entry: Entry) -> None:
        policy = sub.pb.dead_letter_policy
        copy = proto.PubsubMessage()
        copy.data = entry.message.data
        copy.attributes.update(entry.message.attributes)
        copy.ordering_key = entry.message.ordering_key
        project, sub_id = sub.name.split("/")[1], sub.name.split("/")[3]
        copy.attributes.update({
            "CloudPubSubDeadLetterSourceDeliveryCount": str(entry.attempts),
            "CloudPubSubDeadLetterSourceSubscription": sub_id,
            "CloudPubSubDeadLetterSourceSubscriptionProject": project,
            "CloudPubSubDeadLetterSourceTopicPublishTime":
                entry.message.publish_time.ToJsonString(),
        })
        self._publish(policy.dead_letter_topic, copy)
        sub.hold_key(entry, -1)
        entry.state = "gone"
        sub.entries.pop(entry.seq, None)
        sub.cond.notify_all()

    def _end_lease(self, sub: Sub, entry: Entry) -> None:
        if entry.state != "leased":
            return
        sub.leased.pop(entry.ack_id, None)
        holder = entry.holder
        if holder is not None:
            holder.outstanding -= 1
            holder.outstanding_bytes -= entry.size
        entry.holder = None
        sub.cond.notify_all()

    def _set_deadline(self, sub: Sub, entry: Entry, deadline: float) -> None:
        entry.deadline = deadline
        self._schedule(deadline, sub, entry, entry.ack_id)

    # -- the clock ------------------------------------------------------------------------

    def _schedule(self, when: float, sub: Sub, entry: Entry, token: str) -> None:
        first = not self._timers or when < self._timers[0][0]
        heapq.heappush(self._timers, (when, next(self._timer_seq), sub, entry, token))
        if first:
            self._clock.notify()

    def _run_clock(self) -> None:
        with self.lock:
            while not self.closed:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    when, _, sub, entry, token = heapq.heappop(self._timers)
                    self._fire(sub, entry, token, when)
                wait = self._timers[0][0] - now if self._timers else None
                self._clock.wait(wait)

    def _fire(self, sub: Sub, entry: Entry, token: str, when: float) -> None:
        if sub.deleted:
            return
        if token == "ready":
            if entry.state == "delayed" and entry.available_at == when:
                entry.state = "ready"
                sub.hold_key(entry, -1)
                heapq.heappush(sub.ready, (entry.seq, entry))
                sub.cond.notify_all()
        elif entry.state == "leased" and entry.ack_id == token and entry.deadline == when:
            self.fail(sub, entry, push=bool(sub.pb.push_config.push_endpoint))

    # -- the outcome of a push ------------------------------------------------------------

    def push_done(self, sub: Sub, entry: Entry, ack_id: str, ok: bool) -> None:
        """Record a push answer, if the lease it was for still holds."""
        with self.lock:
            if sub.deleted or entry.state != "leased" or entry.ack_id != ack_id:
                return  # too late: the ack deadline passed and it was redelivered
            if ok:
                self.acknowledge(sub, [ack_id])
            else:
                self.fail(sub, entry, push=True)


def _seq_of(ack_id: str, sub: Sub) -> int:
    """The message sequence number in an ack id of ``sub``; INVALID_ARGUMENT when it is not
    one of ours."""
    parts = ack_id.split("-")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise invalid(f"Invalid ack id (ack_id={ack_id})")
    if int(parts[0]) != sub.index:
        return -1  # from another (or an earlier, deleted) subscription: nothing to do
    return int(parts[1])


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + duration.nanos / 1e9


def _now_timestamp() -> Any:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns() // 1_000_000 * 1_000_000)
    return stamp


def _apply_mask(source: Any, target: Any, paths: list[str], immutable: set[str]) -> None:
    from google.protobuf import field_mask_pb2

    fields = source.DESCRIPTOR.fields_by_name
    for path in paths:
        top = path.split(".")[0]
        if top not in fields:
            raise invalid(f"Invalid update_mask provided: '{path}' is not a known field")
        if top in immutable:
            raise invalid(f"Invalid update_mask provided: '{path}' cannot be updated")
    mask = field_mask_pb2.FieldMask(paths=paths)
    mask.MergeMessage(source, target, replace_message_field=True, replace_repeated_field=True)


def _normalize(sub: Any) -> None:
    """Defaults and the bounds real Pub/Sub enforces (INVALID_ARGUMENT out of them)."""
    if sub.ack_deadline_seconds == 0:
        sub.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
    if not 10 <= sub.ack_deadline_seconds <= 600:
        raise invalid(f"Invalid ack_deadline_seconds: {sub.ack_deadline_seconds} (must be "
                      "between 10 and 600)")
    if not sub.HasField("message_retention_duration"):
        sub.message_retention_duration.seconds = 7 * 24 * 3600
    if sub.HasField("retry_policy"):
        policy = sub.retry_policy
        for name in ("minimum_backoff", "maximum_backoff"):
            if policy.HasField(name) and not 0 <= _seconds(getattr(policy, name)) <= 600:
                raise invalid(f"The value for {name} is out of bounds: it must be between 0s "
                              "and 600s.")
        if not policy.HasField("minimum_backoff"):
            policy.minimum_backoff.seconds = int(DEFAULT_MIN_BACKOFF)
        if not policy.HasField("maximum_backoff"):
            policy.maximum_backoff.seconds = int(DEFAULT_MAX_BACKOFF)
        if _seconds(policy.minimum_backoff) > _seconds(policy.maximum_backoff):
            raise invalid("minimum_backoff must not exceed maximum_backoff")
    if sub.HasField("dead_letter_policy"):
        policy = sub.dead_letter_policy
        if not policy.dead_letter_topic:
            sub.ClearField("dead_letter_policy")
        else:
            proto.check_name(policy.dead_letter_topic, "topics")
            if policy.max_delivery_attempts == 0:
                policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
            if not 5 <= policy.max_delivery_attempts <= 100:
                raise PubSubError(grpc.StatusCode.OUT_OF_RANGE,
                                  "max_delivery_attempts must be between 5 and 100, got "
                                  f"{policy.max_delivery_attempts}")
