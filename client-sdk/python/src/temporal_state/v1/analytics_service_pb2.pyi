import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetEventCountsRequest(_message.Message):
    __slots__ = ("entity_type", "start_time", "end_time")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, entity_type: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EventTypeCount(_message.Message):
    __slots__ = ("event_type", "count")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    count: int
    def __init__(self, event_type: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetEventCountsResponse(_message.Message):
    __slots__ = ("counts", "covered_from")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    COVERED_FROM_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[EventTypeCount]
    covered_from: _timestamp_pb2.Timestamp
    def __init__(self, counts: _Optional[_Iterable[_Union[EventTypeCount, _Mapping]]] = ..., covered_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetEventTimeSeriesRequest(_message.Message):
    __slots__ = ("entity_type", "interval", "start_time", "end_time", "event_type")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    interval: _duration_pb2.Duration
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    event_type: str
    def __init__(self, entity_type: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ...) -> None: ...

class TimeBucket(_message.Message):
    __slots__ = ("bucket_start", "count")
    BUCKET_START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bucket_start: _timestamp_pb2.Timestamp
    count: int
    def __init__(self, bucket_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class GetEventTimeSeriesResponse(_message.Message):
    __slots__ = ("buckets", "covered_from")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    COVERED_FROM_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[TimeBucket]
    covered_from: _timestamp_pb2.Timestamp
    def __init__(self, buckets: _Optional[_Iterable[_Union[TimeBucket, _Mapping]]] = ..., covered_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFieldAggregationRequest(_message.Message):
    __slots__ = ("entity_type", "field", "as_of")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    field: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, entity_type: _Optional[str] = ..., field: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ValueFrequency(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Value
    count: int
    def __init__(self, value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class GetFieldAggregationResponse(_message.Message):
    __slots__ = ("count", "missing", "min", "max", "sum", "mean", "top_values", "covered_from")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    TOP_VALUES_FIELD_NUMBER: _ClassVar[int]
    COVERED_FROM_FIELD_NUMBER: _ClassVar[int]
    count: int
    missing: int
    min: float
    max: float
    sum: float
    mean: float
    top_values: _containers.RepeatedCompositeFieldContainer[ValueFrequency]
    covered_from: _timestamp_pb2.Timestamp
    def __init__(self, count: _Optional[int] = ..., missing: _Optional[int] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., sum: _Optional[float] = ..., mean: _Optional[float] = ..., top_values: _Optional[_Iterable[_Union[ValueFrequency, _Mapping]]] = ..., covered_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetMostActiveRequest(_message.Message):
    __slots__ = ("entity_type", "limit", "start_time", "end_time")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    limit: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, entity_type: _Optional[str] = ..., limit: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ActiveInstance(_message.Message):
    __slots__ = ("instance_id", "external_id", "event_count", "last_event_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    external_id: str
    event_count: int
    last_event_at: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., external_id: _Optional[str] = ..., event_count: _Optional[int] = ..., last_event_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetMostActiveResponse(_message.Message):
    __slots__ = ("entries", "covered_from")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COVERED_FROM_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ActiveInstance]
    covered_from: _timestamp_pb2.Timestamp
    def __init__(self, entries: _Optional[_Iterable[_Union[ActiveInstance, _Mapping]]] = ..., covered_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSummaryRequest(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    def __init__(self, entity_type: _Optional[str] = ...) -> None: ...

class GetSummaryResponse(_message.Message):
    __slots__ = ("instance_count", "event_count", "first_event_at", "last_event_at", "events_last_24h", "event_types", "covered_from")
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_AT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_LAST_24H_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    COVERED_FROM_FIELD_NUMBER: _ClassVar[int]
    instance_count: int
    event_count: int
    first_event_at: _timestamp_pb2.Timestamp
    last_event_at: _timestamp_pb2.Timestamp
    events_last_24h: int
    event_types: _containers.RepeatedScalarFieldContainer[str]
    covered_from: _timestamp_pb2.Timestamp
    def __init__(self, instance_count: _Optional[int] = ..., event_count: _Optional[int] = ..., first_event_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_event_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_last_24h: _Optional[int] = ..., event_types: _Optional[_Iterable[str]] = ..., covered_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
