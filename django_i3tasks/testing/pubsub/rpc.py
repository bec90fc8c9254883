"""Registering handlers with gRPC by RPC name (google-cloud-pubsub ships no server stubs).

A handler raises ``PubSubError`` for an answer other than OK; it becomes the call's status
code and message. Any other exception is INTERNAL with its text, and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .proto import PubSubError

logger = logging.getLogger(__name__)

Method = tuple[Callable[..., Any], Any, Any]  # (function, request class, response class)


def _unary(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return function(request, context)
        except PubSubError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:
            logger.exception("%s failed", getattr(function, "__name__", function))
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return call


def _stream(function: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, Any], Any]:
    def call(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from function(requests, context)
        except PubSubError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:
            logger.exception("%s failed", getattr(function, "__name__", function))
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return call


def service(name: str, methods: dict[str, Method], streams: dict[str, Method] | None = None
            ) -> grpc.GenericRpcHandler:
    """A generic handler for the service ``name``: unary ``methods`` and bidirectional
    ``streams``, each (function, request class, response class)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method, (function, request_cls, response_cls) in methods.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            _unary(function), request_deserializer=request_cls.FromString,
            response_serializer=response_cls.SerializeToString,
        )
    for method, (function, request_cls, response_cls) in (streams or {}).items():
        handlers[method] = grpc.stream_stream_rpc_method_handler(
            _stream(function), request_deserializer=request_cls.FromString,
            response_serializer=response_cls.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(name, handlers)
