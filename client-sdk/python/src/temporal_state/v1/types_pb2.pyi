import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLY_MODE_UNSPECIFIED: _ClassVar[ApplyMode]
    APPLY_MODE_MERGE_PATCH: _ClassVar[ApplyMode]
    APPLY_MODE_REPLACE: _ClassVar[ApplyMode]
    APPLY_MODE_JSON_PATCH: _ClassVar[ApplyMode]
APPLY_MODE_UNSPECIFIED: ApplyMode
APPLY_MODE_MERGE_PATCH: ApplyMode
APPLY_MODE_REPLACE: ApplyMode
APPLY_MODE_JSON_PATCH: ApplyMode

class EntityType(_message.Message):
    __slots__ = ("id", "name", "description", "schema", "created_at", "schema_version", "declarations")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    schema: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    schema_version: int
    declarations: EventDeclarations
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema_version: _Optional[int] = ..., declarations: _Optional[_Union[EventDeclarations, _Mapping]] = ...) -> None: ...

class SchemaVersion(_message.Message):
    __slots__ = ("version", "schema", "created_at", "declarations")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    version: int
    schema: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    declarations: EventDeclarations
    def __init__(self, version: _Optional[int] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., declarations: _Optional[_Union[EventDeclarations, _Mapping]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "entity_type_id", "entity_type_name", "external_id", "state", "version", "created_at", "updated_at", "archived", "erased")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    ERASED_FIELD_NUMBER: _ClassVar[int]
    id: str
    entity_type_id: str
    entity_type_name: str
    external_id: str
    state: _struct_pb2.Struct
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    archived: bool
    erased: bool
    def __init__(self, id: _Optional[str] = ..., entity_type_id: _Optional[str] = ..., entity_type_name: _Optional[str] = ..., external_id: _Optional[str] = ..., state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., archived: _Optional[bool] = ..., erased: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "instance_id", "entity_type_id", "event_type", "version", "payload", "metadata", "mode", "recorded_at", "occurred_at", "recorded_by", "schema_version", "change", "position")
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_BY_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    instance_id: str
    entity_type_id: str
    event_type: str
    version: int
    payload: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    mode: ApplyMode
    recorded_at: _timestamp_pb2.Timestamp
    occurred_at: _timestamp_pb2.Timestamp
    recorded_by: str
    schema_version: int
    change: _struct_pb2.Struct
    position: int
    def __init__(self, id: _Optional[str] = ..., instance_id: _Optional[str] = ..., entity_type_id: _Optional[str] = ..., event_type: _Optional[str] = ..., version: _Optional[int] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[_Union[ApplyMode, str]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_by: _Optional[str] = ..., schema_version: _Optional[int] = ..., change: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., position: _Optional[int] = ...) -> None: ...

class EventDeclarations(_message.Message):
    __slots__ = ("strict", "event_types")
    STRICT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    strict: bool
    event_types: _containers.RepeatedCompositeFieldContainer[EventTypeDeclaration]
    def __init__(self, strict: _Optional[bool] = ..., event_types: _Optional[_Iterable[_Union[EventTypeDeclaration, _Mapping]]] = ...) -> None: ...

class EventTypeDeclaration(_message.Message):
    __slots__ = ("event_type", "payload_schema", "mode", "transform", "guards")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    payload_schema: _struct_pb2.Struct
    mode: ApplyMode
    transform: str
    guards: _containers.RepeatedCompositeFieldContainer[EventGuard]
    def __init__(self, event_type: _Optional[str] = ..., payload_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., mode: _Optional[_Union[ApplyMode, str]] = ..., transform: _Optional[str] = ..., guards: _Optional[_Iterable[_Union[EventGuard, _Mapping]]] = ...) -> None: ...

class EventGuard(_message.Message):
    __slots__ = ("expression", "message")
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    expression: str
    message: str
    def __init__(self, expression: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GuardResult(_message.Message):
    __slots__ = ("expression", "message", "passed")
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    expression: str
    message: str
    passed: bool
    def __init__(self, expression: _Optional[str] = ..., message: _Optional[str] = ..., passed: _Optional[bool] = ...) -> None: ...
