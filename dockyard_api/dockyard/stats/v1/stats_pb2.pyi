from dockyard_api.dockyard.shim.v1 import stats_pb2 as _stats_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("ids", "filters", "all", "interval_ms")
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    interval_ms: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("samples", "dropped")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_stats_pb2.Sample]
    dropped: int
    def __init__(self, samples: _Optional[_Iterable[_Union[_stats_pb2.Sample, _Mapping]]] = ..., dropped: _Optional[int] = ...) -> None: ...
