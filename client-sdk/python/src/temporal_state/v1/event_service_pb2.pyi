import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from temporal_state.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyEventRequest(_message.Message):
    __slots__ = ("instance_id", "event_type", "payload", "metadata", "expected_version", "event_id", "occurred_at", "mode", "entity_type", "external_id", "create_if_missing", "initial_state", "dry_run")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    event_type: str
    payload: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    expected_version: int
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    mode: _types_pb2.ApplyMode
    entity_type: str
    external_id: str
    create_if_missing: bool
    initial_state: _struct_pb2.Struct
    dry_run: bool
    def __init__(self, instance_id: _Optional[str] = ..., event_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., expected_version: _Optional[int] = ..., event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mode: _Optional[_Union[_types_pb2.ApplyMode, str]] = ..., entity_type: _Optional[str] = ..., external_id: _Optional[str] = ..., create_if_missing: _Optional[bool] = ..., initial_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyEventResponse(_message.Message):
    __slots__ = ("event", "state", "guards", "dry_run")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    event: _types_pb2.Event
    state: _struct_pb2.Struct
    guards: _containers.RepeatedCompositeFieldContainer[_types_pb2.GuardResult]
    dry_run: bool
    def __init__(self, event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., guards: _Optional[_Iterable[_Union[_types_pb2.GuardResult, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class EventInput(_message.Message):
    __slots__ = ("event_type", "payload", "metadata", "event_id", "occurred_at", "mode")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    payload: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    mode: _types_pb2.ApplyMode
    def __init__(self, event_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mode: _Optional[_Union[_types_pb2.ApplyMode, str]] = ...) -> None: ...

class ApplyEventsRequest(_message.Message):
    __slots__ = ("instance_id", "expected_version", "events", "entity_type", "external_id", "create_if_missing", "initial_state", "dry_run")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    expected_version: int
    events: _containers.RepeatedCompositeFieldContainer[EventInput]
    entity_type: str
    external_id: str
    create_if_missing: bool
    initial_state: _struct_pb2.Struct
    dry_run: bool
    def __init__(self, instance_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., events: _Optional[_Iterable[_Union[EventInput, _Mapping]]] = ..., entity_type: _Optional[str] = ..., external_id: _Optional[str] = ..., create_if_missing: _Optional[bool] = ..., initial_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyEventsResponse(_message.Message):
    __slots__ = ("events", "state", "guards", "dry_run")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    state: _struct_pb2.Struct
    guards: _containers.RepeatedCompositeFieldContainer[_types_pb2.GuardResult]
    dry_run: bool
    def __init__(self, events: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., guards: _Optional[_Iterable[_Union[_types_pb2.GuardResult, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("entity_type", "instance_id", "event_types", "from_version", "from_position", "entity_types")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    instance_id: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    from_version: int
    from_position: int
    entity_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_type: _Optional[str] = ..., instance_id: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., from_version: _Optional[int] = ..., from_position: _Optional[int] = ..., entity_types: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _types_pb2.Event
    def __init__(self, event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ...) -> None: ...
