"""A Pub/Sub emulator in Python, for tests, the demo and local development.

The official ``google-cloud-pubsub`` client talks to it unchanged through
``PUBSUB_EMULATOR_HOST``. It serves the Publisher and Subscriber gRPC services from memory:
topic and subscription administration, publish, pull, StreamingPull (flow control, stream
ack deadline, acks/modacks/nacks on the stream), acknowledge, ``modify_ack_deadline``,
redelivery after the ack deadline, push subscriptions (retry policy backoff, push timeout =
ack deadline), dead-letter policies with ``delivery_attempt``, ordering keys and attribute
filters. Each module states what it guarantees; ``docs/emulator.md`` lists what is not
emulated (snapshots and seek, exactly-once delivery, OIDC tokens on push, schemas, message
retention and expiration, BigQuery/Cloud Storage subscriptions, IAM).

``EmulatorServer().start()`` runs it in this process; ``python -m
django_i3tasks.testing.pubsub`` in the foreground; ``django_i3tasks.testing.emulator`` is the
launcher that picks this one or Google's Java emulator.
"""

from .server import EmulatorServer

__all__ = ["EmulatorServer"]
