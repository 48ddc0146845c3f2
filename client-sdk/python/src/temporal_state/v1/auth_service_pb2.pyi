from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALLER_KIND_UNSPECIFIED: _ClassVar[CallerKind]
    CALLER_KIND_ANONYMOUS: _ClassVar[CallerKind]
    CALLER_KIND_API_KEY: _ClassVar[CallerKind]
    CALLER_KIND_JWT: _ClassVar[CallerKind]
    CALLER_KIND_CLIENT_CERTIFICATE: _ClassVar[CallerKind]
CALLER_KIND_UNSPECIFIED: CallerKind
CALLER_KIND_ANONYMOUS: CallerKind
CALLER_KIND_API_KEY: CallerKind
CALLER_KIND_JWT: CallerKind
CALLER_KIND_CLIENT_CERTIFICATE: CallerKind

class GetCallerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCallerResponse(_message.Message):
    __slots__ = ("name", "kind", "scopes", "authentication_enabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: CallerKind
    scopes: _containers.RepeatedScalarFieldContainer[str]
    authentication_enabled: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[CallerKind, str]] = ..., scopes: _Optional[_Iterable[str]] = ..., authentication_enabled: _Optional[bool] = ...) -> None: ...
