"""The ``google.pubsub.v1.Publisher`` service: topic administration and publishing.

Pages of list calls hold at most ``page_size`` names (all when 0); the page token is the last
name of the previous page. Snapshots are not emulated: ListTopicSnapshots answers an empty list.
"""

from __future__ import annotations

from typing import Any

from . import proto
from .rpc import service
from .state import Broker


def _page(names: list[str], page_size: int, token: str) -> tuple[list[str], str]:
    """One page of sorted ``names`` after ``token``, and the next token ('' at the end)."""
    rest = [name for name in names if name > token] if token else names
    if page_size <= 0 or len(rest) <= page_size:
        return rest, ""
    return rest[:page_size], rest[page_size - 1]


class PublisherService:
    """Handlers by RPC name; each takes the raw request and returns the raw response."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def CreateTopic(self, request: Any, context: Any) -> Any:
        return self.broker.create_topic(request)

    def GetTopic(self, request: Any, context: Any) -> Any:
        return self.broker.get_topic(request.topic)

    def UpdateTopic(self, request: Any, context: Any) -> Any:
        return self.broker.update_topic(request.topic, list(request.update_mask.paths))

    def Publish(self, request: Any, context: Any) -> Any:
        ids = self.broker.publish(request.topic, request.messages)
        return proto.PublishResponse(message_ids=ids)

    def ListTopics(self, request: Any, context: Any) -> Any:
        names, token = _page(self.broker.list_topics(request.project), request.page_size,
                             request.page_token)
        with self.broker.lock:
            topics = [self.broker.topics[name] for name in names if name in self.broker.topics]
        return proto.ListTopicsResponse(topics=topics, next_page_token=token)

    def ListTopicSubscriptions(self, request: Any, context: Any) -> Any:
        names, token = _page(self.broker.topic_subscriptions(request.topic),
                             request.page_size, request.page_token)
        return proto.ListTopicSubscriptionsResponse(subscriptions=names, next_page_token=token)

    def ListTopicSnapshots(self, request: Any, context: Any) -> Any:
        self.broker.get_topic(request.topic)
        return proto.ListTopicSnapshotsResponse()

    def DeleteTopic(self, request: Any, context: Any) -> Any:
        self.broker.delete_topic(request.topic)
        return proto.Empty()

    def DetachSubscription(self, request: Any, context: Any) -> Any:
        self.broker.detach_subscription(request.subscription)
        return proto.DetachSubscriptionResponse()


def handler(broker: Broker) -> Any:
    """The generic gRPC handler of the service."""
    impl = PublisherService(broker)
    return service("google.pubsub.v1.Publisher", {
        "CreateTopic": (impl.CreateTopic, proto.Topic, proto.Topic),
        "GetTopic": (impl.GetTopic, proto.GetTopicRequest, proto.Topic),
        "UpdateTopic": (impl.UpdateTopic, proto.UpdateTopicRequest, proto.Topic),
        "Publish": (impl.Publish, proto.PublishRequest, proto.PublishResponse),
        "ListTopics": (impl.ListTopics, proto.ListTopicsRequest, proto.ListTopicsResponse),
        "ListTopicSubscriptions": (impl.ListTopicSubscriptions,
                                   proto.ListTopicSubscriptionsRequest,
                                   proto.ListTopicSubscriptionsResponse),
        "ListTopicSnapshots": (impl.ListTopicSnapshots, proto.ListTopicSnapshotsRequest,
                               proto.ListTopicSnapshotsResponse),
        "DeleteTopic": (impl.DeleteTopic, proto.DeleteTopicRequest, proto.Empty),
        "DetachSubscription": (impl.DetachSubscription, proto.DetachSubscriptionRequest,
                               proto.DetachSubscriptionResponse),
    })
