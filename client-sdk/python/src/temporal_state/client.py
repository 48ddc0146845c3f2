"""One gRPC channel with the six service stubs, and dict <-> Struct conversions."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import grpc
from google.protobuf import struct_pb2

from temporal_state.v1 import (
    analytics_service_pb2_grpc,
    auth_service_pb2_grpc,
    entity_type_service_pb2_grpc,
    event_service_pb2_grpc,
    instance_service_pb2_grpc,
    query_service_pb2_grpc,
)

# Largest integer a double (protobuf's only number type) holds exactly.
_MAX_SAFE_INTEGER = 2**53


class Client:
    """The stubs of every service of the API over one channel.

    Attributes:
        channel: the underlying ``grpc.Channel``.
        entity_types: ``EntityTypeServiceStub``.
        instances: ``InstanceServiceStub``.
        events: ``EventServiceStub`` (``Subscribe`` returns an iterator of responses).
        queries: ``QueryServiceStub``.
        analytics: ``AnalyticsServiceStub``.
        auth: ``AuthServiceStub`` (``GetCaller``: who the server takes the caller for).
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.entity_types = entity_type_service_pb2_grpc.EntityTypeServiceStub(channel)
        self.instances = instance_service_pb2_grpc.InstanceServiceStub(channel)
        self.events = event_service_pb2_grpc.EventServiceStub(channel)
        self.queries = query_service_pb2_grpc.QueryServiceStub(channel)
        self.analytics = analytics_service_pb2_grpc.AnalyticsServiceStub(channel)
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(
    target: str = "127.0.0.1:50051",
    *,
    credentials: Optional[grpc.ChannelCredentials] = None,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
) -> Client:
    """A :class:`Client` on ``target`` (``host:port``).

    Plaintext unless ``credentials`` are given (``grpc.ssl_channel_credentials()`` for TLS).
    ``options`` are gRPC channel options, e.g. ``[("grpc.enable_retries", 1)]``.
    """
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return Client(channel)


def to_value(value: Any) -> struct_pb2.Value:
    """A JSON-like Python value as a ``google.protobuf.Value``."""
    v = struct_pb2.Value()
    if value is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, (int, float)):
        v.number_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, dict):
        v.struct_value.CopyFrom(to_struct(value))
    elif isinstance(value, (list, tuple)):
        v.list_value.values.extend(to_value(x) for x in value)
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")
    return v


def to_struct(obj: dict) -> struct_pb2.Struct:
    """A ``dict`` (a JSON object) as a ``google.protobuf.Struct``."""
    s = struct_pb2.Struct()
    for key, value in obj.items():
        s.fields[key].CopyFrom(to_value(value))
    return s


def _from_value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        return int(n) if n.is_integer() and abs(n) <= _MAX_SAFE_INTEGER else n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return to_dict(v.struct_value)
    if kind == "list_value":
        return [_from_value(x) for x in v.list_value.values]
    return None


def to_dict(struct: struct_pb2.Struct) -> dict:
    """A ``google.protobuf.Struct`` as a ``dict``; integral numbers come back as ``int``."""
    return {key: _from_value(value) for key, value in struct.fields.items()}
