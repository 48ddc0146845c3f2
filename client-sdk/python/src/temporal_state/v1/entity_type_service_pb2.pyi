from google.protobuf import struct_pb2 as _struct_pb2
from temporal_state.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateEntityTypeRequest(_message.Message):
    __slots__ = ("name", "description", "schema", "declarations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    schema: _struct_pb2.Struct
    declarations: _types_pb2.EventDeclarations
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., declarations: _Optional[_Union[_types_pb2.EventDeclarations, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("entity_type", "schema_versions")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    entity_type: _types_pb2.EntityType
    schema_versions: _containers.RepeatedCompositeFieldContainer[_types_pb2.SchemaVersion]
    def __init__(self, entity_type: _Optional[_Union[_types_pb2.EntityType, _Mapping]] = ..., schema_versions: _Optional[_Iterable[_Union[_types_pb2.SchemaVersion, _Mapping]]] = ...) -> None: ...

class UpdateEntityTypeRequest(_message.Message):
    __slots__ = ("entity_type", "description", "schema", "expected_schema_version", "dry_run", "allow_invalid_existing", "declarations")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_INVALID_EXISTING_FIELD_NUMBER: _ClassVar[int]
    DECLARATIONS_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    description: str
    schema: _struct_pb2.Struct
    expected_schema_version: int
    dry_run: bool
    allow_invalid_existing: bool
    declarations: _types_pb2.EventDeclarations
    def __init__(self, entity_type: _Optional[str] = ..., description: _Optional[str] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., expected_schema_version: _Optional[int] = ..., dry_run: _Optional[bool] = ..., allow_invalid_existing: _Optional[bool] = ..., declarations: _Optional[_Union[_types_pb2.EventDeclarations, _Mapping]] = ...) -> None: ...

class SchemaViolation(_message.Message):
    __slots__ = ("instance_id", "external_id", "version", "paths", "messages")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    external_id: str
    version: int
    paths: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[str] = ..., external_id: _Optional[str] = ..., version: _Optional[int] = ..., paths: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateEntityTypeResponse(_message.Message):
    __slots__ = ("entity_type", "checked_instances", "invalid_instances", "violations", "applied")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    CHECKED_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    INVALID_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    entity_type: _types_pb2.EntityType
    checked_instances: int
    invalid_instances: int
    violations: _containers.RepeatedCompositeFieldContainer[SchemaViolation]
    applied: bool
    def __init__(self, entity_type: _Optional[_Union[_types_pb2.EntityType, _Mapping]] = ..., checked_instances: _Optional[int] = ..., invalid_instances: _Optional[int] = ..., violations: _Optional[_Iterable[_Union[SchemaViolation, _Mapping]]] = ..., applied: _Optional[bool] = ...) -> None: ...

class DeleteEntityTypeRequest(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    def __init__(self, entity_type: _Optional[str] = ...) -> None: ...

class DeleteEntityTypeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
