import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from temporal_state.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TimeAxis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_AXIS_UNSPECIFIED: _ClassVar[TimeAxis]
    TIME_AXIS_RECORDED_AT: _ClassVar[TimeAxis]
    TIME_AXIS_OCCURRED_AT: _ClassVar[TimeAxis]
    TIME_AXIS_BOTH: _ClassVar[TimeAxis]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_ADDED: _ClassVar[ChangeKind]
    CHANGE_KIND_REMOVED: _ClassVar[ChangeKind]
    CHANGE_KIND_CHANGED: _ClassVar[ChangeKind]
TIME_AXIS_UNSPECIFIED: TimeAxis
TIME_AXIS_RECORDED_AT: TimeAxis
TIME_AXIS_OCCURRED_AT: TimeAxis
TIME_AXIS_BOTH: TimeAxis
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_ADDED: ChangeKind
CHANGE_KIND_REMOVED: ChangeKind
CHANGE_KIND_CHANGED: ChangeKind

class ReadEventsRequest(_message.Message):
    __slots__ = ("from_position", "entity_types", "event_types", "page_size")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    entity_types: _containers.RepeatedScalarFieldContainer[str]
    event_types: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    def __init__(self, from_position: _Optional[int] = ..., entity_types: _Optional[_Iterable[str]] = ..., event_types: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ...) -> None: ...

class ReadEventsResponse(_message.Message):
    __slots__ = ("events", "next_position", "head_position")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    next_position: int
    head_position: int
    def __init__(self, events: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., next_position: _Optional[int] = ..., head_position: _Optional[int] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("instance_id", "page_size", "page_token", "from_version", "to_version", "start_time", "end_time", "event_types", "descending")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    page_size: int
    page_token: str
    from_version: int
    to_version: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    event_types: _containers.RepeatedScalarFieldContainer[str]
    descending: bool
    def __init__(self, instance_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_types: _Optional[_Iterable[str]] = ..., descending: _Optional[bool] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStateAtVersionRequest(_message.Message):
    __slots__ = ("instance_id", "version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    version: int
    def __init__(self, instance_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetStateAtVersionResponse(_message.Message):
    __slots__ = ("state", "version", "recorded_at")
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    state: _struct_pb2.Struct
    version: int
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStateAtTimeRequest(_message.Message):
    __slots__ = ("instance_id", "timestamp", "axis", "known_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    AXIS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    timestamp: _timestamp_pb2.Timestamp
    axis: TimeAxis
    known_at: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., axis: _Optional[_Union[TimeAxis, str]] = ..., known_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStateAtTimeResponse(_message.Message):
    __slots__ = ("state", "version", "recorded_at", "occurred_at")
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    state: _struct_pb2.Struct
    version: int
    recorded_at: _timestamp_pb2.Timestamp
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompareVersionsRequest(_message.Message):
    __slots__ = ("instance_id", "version1", "version2")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION1_FIELD_NUMBER: _ClassVar[int]
    VERSION2_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    version1: int
    version2: int
    def __init__(self, instance_id: _Optional[str] = ..., version1: _Optional[int] = ..., version2: _Optional[int] = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("path", "kind", "old_value", "new_value")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: ChangeKind
    old_value: _struct_pb2.Value
    new_value: _struct_pb2.Value
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., old_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., new_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class CompareVersionsResponse(_message.Message):
    __slots__ = ("state1", "state2", "patch", "changes")
    STATE1_FIELD_NUMBER: _ClassVar[int]
    STATE2_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    state1: _struct_pb2.Struct
    state2: _struct_pb2.Struct
    patch: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    changes: _containers.RepeatedCompositeFieldContainer[FieldChange]
    def __init__(self, state1: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., state2: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., patch: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ...) -> None: ...

class GetFieldTimelineRequest(_message.Message):
    __slots__ = ("instance_id", "field", "from_version", "to_version", "start_time", "end_time", "page_size", "page_token")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    field: str
    from_version: int
    to_version: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, instance_id: _Optional[str] = ..., field: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class TimelinePoint(_message.Message):
    __slots__ = ("version", "recorded_at", "event_type", "value")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    version: int
    recorded_at: _timestamp_pb2.Timestamp
    event_type: str
    value: _struct_pb2.Value
    def __init__(self, version: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class GetFieldTimelineResponse(_message.Message):
    __slots__ = ("points", "next_page_token")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[TimelinePoint]
    next_page_token: str
    def __init__(self, points: _Optional[_Iterable[_Union[TimelinePoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
