"""The ``google.pubsub.v1.Subscriber`` service: subscriptions, pull, StreamingPull, acks.

Guarantees of StreamingPull: the first request names the subscription and sets the stream
ack deadline (10-600 s) and flow control (``max_outstanding_messages``/``bytes``: the stream
never holds more unacknowledged messages than that, but always at least one); messages
delivered on the stream are leased for the stream ack deadline; acks, deadline changes and
nacks (deadline 0) on the stream act like the unary calls; a later request may change the
stream ack deadline; empty requests (the client's keep-alives) are accepted. When the client
closes or cancels the stream it gets no more messages; what it confirmed (the client library
changes the deadline of each message it receives) stays leased until acked, nacked or expired,
and what it never confirmed (probably still in flight) is available again at once, so a closed
stream never swallows messages. Deleting the
subscription ends its streams with NOT_FOUND; stopping the server ends them with UNAVAILABLE.

A unary Pull without messages waits up to a second (less when the call's deadline is closer)
for one, then answers empty; with ``return_immediately`` it answers at once.
Snapshots and Seek are not emulated (UNIMPLEMENTED).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from . import proto
from .proto import PubSubError, invalid
from .publisher import _page
from .rpc import service
from .state import Broker, Holder, Sub

PULL_WAIT = 1.0
STREAM_BATCH = 1000


class SubscriberService:
    """Handlers by RPC name; each takes the raw request and returns the raw response."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # -- administration -------------------------------------------------------------------

    def CreateSubscription(self, request: Any, context: Any) -> Any:
        return self.broker.create_subscription(request)

    def GetSubscription(self, request: Any, context: Any) -> Any:
        return self.broker.get_subscription(request.subscription)

    def UpdateSubscription(self, request: Any, context: Any) -> Any:
        return self.broker.update_subscription(request.subscription,
                                               list(request.update_mask.paths))

    def ListSubscriptions(self, request: Any, context: Any) -> Any:
        subs = {sub.name: sub for sub in self.broker.list_subscriptions(request.project)}
        names, token = _page(sorted(subs), request.page_size, request.page_token)
        return proto.ListSubscriptionsResponse(subscriptions=[subs[n] for n in names],
                                               next_page_token=token)

    def DeleteSubscription(self, request: Any, context: Any) -> Any:
        self.broker.delete_subscription(request.subscription)
        return proto.Empty()

    def ModifyPushConfig(self, request: Any, context: Any) -> Any:
        self.broker.modify_push_config(request.subscription, request.push_config)
        return proto.Empty()

    # -- messages -------------------------------------------------------------------------

    def Acknowledge(self, request: Any, context: Any) -> Any:
        if not request.ack_ids:
            raise invalid("No ack_ids in the request")
        with self.broker.lock:
            self.broker.acknowledge(self.broker.sub(request.subscription), request.ack_ids)
        return proto.Empty()

    def ModifyAckDeadline(self, request: Any, context: Any) -> Any:
        with self.broker.lock:
            self.broker.modify_deadline(self.broker.sub(request.subscription), request.ack_ids,
                                        request.ack_deadline_seconds)
        return proto.Empty()

    def Pull(self, request: Any, context: Any) -> Any:
        if request.max_messages <= 0:
            raise invalid("No max_messages specified")
        broker = self.broker
        remaining = context.time_remaining()
        wait = 0.0 if request.return_immediately else min(
            PULL_WAIT, max(0.0, (remaining or PULL_WAIT) - 0.2))
        deadline = time.monotonic() + wait
        with broker.lock:
            sub = broker.sub(request.subscription)
            while True:
                if sub.deleted:
                    raise proto.not_found("Subscription")
                taken = broker.take(sub, Holder(), request.max_messages,
                                    int(sub.pb.ack_deadline_seconds))
                left = deadline - time.monotonic()
                if taken or left <= 0 or not context.is_active():
                    return proto.PullResponse(received_messages=taken)
                sub.cond.wait(left)

    def StreamingPull(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        broker = self.broker
        first = next(requests, None)
        if first is None:
            return
        if not first.subscription:
            raise invalid("The first StreamingPullRequest must name the subscription")
        if not 10 <= first.stream_ack_deadline_seconds <= 600:
            raise invalid("Invalid stream_ack_deadline_seconds: "
                          f"{first.stream_ack_deadline_seconds} (must be between 10 and 600)")
        holder = Holder(max_messages=max(0, first.max_outstanding_messages),
                        max_bytes=max(0, first.max_outstanding_bytes),
                        ack_deadline=first.stream_ack_deadline_seconds)
        with broker.lock:
            sub = broker.sub(first.subscription)
            _apply(broker, sub, holder, first)
        failure: list[PubSubError] = []

        def close() -> None:
            with broker.lock:
                if not holder.closed:
                    holder.closed = True
                    if not sub.deleted:
                        broker.forget_unconfirmed(sub, holder)
                sub.cond.notify_all()

        context.add_callback(close)
        reader = threading.Thread(target=_read, args=(broker, sub, holder, requests, failure,
                                                      close),
                                  name=f"pubsub-stream-{sub.index}", daemon=True)
        reader.start()
        properties = proto.StreamingPullResponse.SubscriptionProperties(
            message_ordering_enabled=sub.ordered)
        while True:
            with broker.lock:
                while True:
                    if failure:
                        raise failure[0]
                    if sub.deleted:
                        if broker.closed:
                            raise PubSubError(grpc.StatusCode.UNAVAILABLE,
                                              "The server is stopping")
                        raise proto.not_found("Subscription")
                    if holder.closed:
                        return
                    taken = broker.take(sub, holder, STREAM_BATCH, holder.ack_deadline)
                    if taken:
                        break
                    sub.cond.wait(5.0)
            yield proto.StreamingPullResponse(received_messages=taken,
                                              subscription_properties=properties)


def _apply(broker: Broker, sub: Sub, holder: Holder, request: Any) -> None:
    """The acks, deadline changes and stream settings of one StreamingPull request (caller
    holds the lock)."""
    if len(request.modify_deadline_seconds) != len(request.modify_deadline_ack_ids):
        raise invalid("modify_deadline_seconds and modify_deadline_ack_ids differ in length")
    if request.stream_ack_deadline_seconds:
        if not 10 <= request.stream_ack_deadline_seconds <= 600:
            raise invalid("Invalid stream_ack_deadline_seconds: "
                          f"{request.stream_ack_deadline_seconds}")
        holder.ack_deadline = request.stream_ack_deadline_seconds
    if request.ack_ids:
        broker.acknowledge(sub, _ours(request.ack_ids))
    for seconds, ack_id in zip(request.modify_deadline_seconds,
                               request.modify_deadline_ack_ids, strict=True):
        ids = _ours([ack_id])
        if ids:
            broker.modify_deadline(sub, ids, seconds)


def _ours(ack_ids: Any) -> list[str]:
    """Well-formed ack ids (on a stream, a malformed one is ignored rather than fatal)."""
    return [ack_id for ack_id in ack_ids
            if ack_id.count("-") == 2 and ack_id.replace("-", "").isdigit()]


def _read(broker: Broker, sub: Sub, holder: Holder, requests: Iterator[Any],
          failure: list[PubSubError], close: Any) -> None:
    """Apply the stream's requests as they come; the stream ends when they end."""
    try:
        for request in requests:
            with broker.lock:
                if sub.deleted:
                    break
                _apply(broker, sub, holder, request)
    except PubSubError as exc:
        failure.append(exc)
    except Exception:  # noqa: BLE001 - the client went away (cancelled, disconnected)
        pass
    finally:
        close()


def handler(broker: Broker) -> Any:
    """The generic gRPC handler of the service."""
    impl = SubscriberService(broker)
    return service("google.pubsub.v1.Subscriber", {
        "CreateSubscription": (impl.CreateSubscription, proto.Subscription, proto.Subscription),
        "GetSubscription": (impl.GetSubscription, proto.GetSubscriptionRequest,
                            proto.Subscription),
        "UpdateSubscription": (impl.UpdateSubscription, proto.UpdateSubscriptionRequest,
                               proto.Subscription),
        "ListSubscriptions": (impl.ListSubscriptions, proto.ListSubscriptionsRequest,
                              proto.ListSubscriptionsResponse),
        "DeleteSubscription": (impl.DeleteSubscription, proto.DeleteSubscriptionRequest,
                               proto.Empty),
        "ModifyPushConfig": (impl.ModifyPushConfig, proto.ModifyPushConfigRequest, proto.Empty),
        "Acknowledge": (impl.Acknowledge, proto.AcknowledgeRequest, proto.Empty),
        "ModifyAckDeadline": (impl.ModifyAckDeadline, proto.ModifyAckDeadlineRequest,
                              proto.Empty),
        "Pull": (impl.Pull, proto.PullRequest, proto.PullResponse),
    }, streams={
        "StreamingPull": (impl.StreamingPull, proto.StreamingPullRequest,
                          proto.StreamingPullResponse),
    })
