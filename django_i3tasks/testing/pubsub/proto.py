"""The raw protobuf classes of the Pub/Sub API, and the error a handler raises.

google-cloud-pubsub ships the messages as proto-plus wrappers; the server works on the raw
protobuf classes behind them (``.pb()``), which is what gRPC (de)serializes and is faster
than the wrappers.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1.types import pubsub as _types

Empty = empty_pb2.Empty
Topic = _types.Topic.pb()
Subscription = _types.Subscription.pb()
PubsubMessage = _types.PubsubMessage.pb()
ReceivedMessage = _types.ReceivedMessage.pb()
PushConfig = _types.PushConfig.pb()
RetryPolicy = _types.RetryPolicy.pb()
DeadLetterPolicy = _types.DeadLetterPolicy.pb()

GetTopicRequest = _types.GetTopicRequest.pb()
UpdateTopicRequest = _types.UpdateTopicRequest.pb()
PublishRequest = _types.PublishRequest.pb()
PublishResponse = _types.PublishResponse.pb()
ListTopicsRequest = _types.ListTopicsRequest.pb()
ListTopicsResponse = _types.ListTopicsResponse.pb()
ListTopicSubscriptionsRequest = _types.ListTopicSubscriptionsRequest.pb()
ListTopicSubscriptionsResponse = _types.ListTopicSubscriptionsResponse.pb()
ListTopicSnapshotsRequest = _types.ListTopicSnapshotsRequest.pb()
ListTopicSnapshotsResponse = _types.ListTopicSnapshotsResponse.pb()
DeleteTopicRequest = _types.DeleteTopicRequest.pb()
DetachSubscriptionRequest = _types.DetachSubscriptionRequest.pb()
DetachSubscriptionResponse = _types.DetachSubscriptionResponse.pb()

GetSubscriptionRequest = _types.GetSubscriptionRequest.pb()
UpdateSubscriptionRequest = _types.UpdateSubscriptionRequest.pb()
ListSubscriptionsRequest = _types.ListSubscriptionsRequest.pb()
ListSubscriptionsResponse = _types.ListSubscriptionsResponse.pb()
DeleteSubscriptionRequest = _types.DeleteSubscriptionRequest.pb()
ModifyAckDeadlineRequest = _types.ModifyAckDeadlineRequest.pb()
AcknowledgeRequest = _types.AcknowledgeRequest.pb()
PullRequest = _types.PullRequest.pb()
PullResponse = _types.PullResponse.pb()
StreamingPullRequest = _types.StreamingPullRequest.pb()
StreamingPullResponse = _types.StreamingPullResponse.pb()
ModifyPushConfigRequest = _types.ModifyPushConfigRequest.pb()

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9\-.:]{0,99}")


class PubSubError(Exception):
    """An RPC answer other than OK: a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(what: str) -> PubSubError:
    return PubSubError(grpc.StatusCode.NOT_FOUND, f"{what} not found")


def invalid(message: str) -> PubSubError:
    return PubSubError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_name(name: str, collection: str) -> str:
    """``name`` if it is ``projects/{project}/{collection}/{id}`` with a valid id, else
    INVALID_ARGUMENT (ids: 3-255 characters, a letter first, not starting with ``goog``)."""
    parts = name.split("/")
    if (len(parts) != 4 or parts[0] != "projects" or parts[2] != collection
            or not _PROJECT_ID.fullmatch(parts[1]) or not _RESOURCE_ID.fullmatch(parts[3])
            or parts[3].lower().startswith("goog")):
        raise invalid(f"Invalid [{collection}] name: (name={name})")
    return name


def project_of(name: str) -> str:
    """``projects/P`` for a resource name or a project name (INVALID_ARGUMENT otherwise)."""
    parts = name.split("/")
    if len(parts) < 2 or parts[0] != "projects" or not parts[1]:
        raise invalid(f"Invalid project name: (project={name})")
    return "/".join(parts[:2])
