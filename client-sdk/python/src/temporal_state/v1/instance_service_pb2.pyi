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

class InstanceOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_ORDER_UNSPECIFIED: _ClassVar[InstanceOrder]
    INSTANCE_ORDER_EXTERNAL_ID: _ClassVar[InstanceOrder]
    INSTANCE_ORDER_RECENTLY_UPDATED: _ClassVar[InstanceOrder]

class InstanceView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_VIEW_UNSPECIFIED: _ClassVar[InstanceView]
    INSTANCE_VIEW_FULL: _ClassVar[InstanceView]
    INSTANCE_VIEW_BASIC: _ClassVar[InstanceView]
INSTANCE_ORDER_UNSPECIFIED: InstanceOrder
INSTANCE_ORDER_EXTERNAL_ID: InstanceOrder
INSTANCE_ORDER_RECENTLY_UPDATED: InstanceOrder
INSTANCE_VIEW_UNSPECIFIED: InstanceView
INSTANCE_VIEW_FULL: InstanceView
INSTANCE_VIEW_BASIC: InstanceView

class CreateInstanceRequest(_message.Message):
    __slots__ = ("entity_type", "external_id", "initial_state", "metadata")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    external_id: str
    initial_state: _struct_pb2.Struct
    metadata: _struct_pb2.Struct
    def __init__(self, entity_type: _Optional[str] = ..., external_id: _Optional[str] = ..., initial_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateInstanceResponse(_message.Message):
    __slots__ = ("instance", "event")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    event: _types_pb2.Event
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ..., event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("entity_type", "page_size", "page_token", "include_archived", "external_id_prefix", "updated_since", "updated_before", "state_path", "state_equals", "order_by", "view")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_SINCE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    STATE_PATH_FIELD_NUMBER: _ClassVar[int]
    STATE_EQUALS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    page_size: int
    page_token: str
    include_archived: bool
    external_id_prefix: str
    updated_since: _timestamp_pb2.Timestamp
    updated_before: _timestamp_pb2.Timestamp
    state_path: str
    state_equals: _struct_pb2.Value
    order_by: InstanceOrder
    view: InstanceView
    def __init__(self, entity_type: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_archived: _Optional[bool] = ..., external_id_prefix: _Optional[str] = ..., updated_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_path: _Optional[str] = ..., state_equals: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., order_by: _Optional[_Union[InstanceOrder, str]] = ..., view: _Optional[_Union[InstanceView, str]] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.Instance]
    next_page_token: str
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetInstanceRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class GetInstanceResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ...) -> None: ...

class GetCurrentStateRequest(_message.Message):
    __slots__ = ("entity_type", "external_id")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    external_id: str
    def __init__(self, entity_type: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class GetCurrentStateResponse(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ...) -> None: ...

class ArchiveInstanceRequest(_message.Message):
    __slots__ = ("instance_id", "metadata", "expected_version", "event_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    metadata: _struct_pb2.Struct
    expected_version: int
    event_id: str
    def __init__(self, instance_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., expected_version: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class ArchiveInstanceResponse(_message.Message):
    __slots__ = ("instance", "event")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    event: _types_pb2.Event
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ..., event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ...) -> None: ...

class RestoreInstanceRequest(_message.Message):
    __slots__ = ("instance_id", "metadata", "expected_version", "event_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    metadata: _struct_pb2.Struct
    expected_version: int
    event_id: str
    def __init__(self, instance_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., expected_version: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class RestoreInstanceResponse(_message.Message):
    __slots__ = ("instance", "event")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    event: _types_pb2.Event
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ..., event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ...) -> None: ...

class EraseInstanceRequest(_message.Message):
    __slots__ = ("instance_id", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    reason: str
    def __init__(self, instance_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseInstanceResponse(_message.Message):
    __slots__ = ("instance", "event")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    event: _types_pb2.Event
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ..., event: _Optional[_Union[_types_pb2.Event, _Mapping]] = ...) -> None: ...
