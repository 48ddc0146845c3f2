from google.protobuf import struct_pb2 as _struct_pb2
from temporal_state.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateEntityTypeRequest(_message.Message):
    __slots__ = ("name", "description", "schema")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    schema: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateEntityTypeResponse(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: _types_pb2.EntityType
    def __init__(self, entity_type: _Optional[_Union[_types_pb2.EntityType, _Mapping]] = ...) -> None: ...

class ListEntityTypesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntityTypesResponse(_message.Message):
    __slots__ = ("entity_types", "next_page_token")
    ENTITY_TYPES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entity_types: _containers.RepeatedCompositeFieldContainer[_types_pb2.EntityType]
    next_page_token: str
    def __init__(self, entity_types: _Optional[_Iterable[_Union[_types_pb2.EntityType, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEntityTypeRequest(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    def __init__(self, entity_type: _Optional[str] = ...) -> None: ...

class GetEntityTypeResponse(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: _types_pb2.EntityType
    def __init__(self, entity_type: _Optional[_Union[_types_pb2.EntityType, _Mapping]] = ...) -> None: ...
