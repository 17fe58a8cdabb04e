import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthcheckResult(_message.Message):
    __slots__ = ("start", "end", "exit_code", "output")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    exit_code: int
    output: str
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_code: _Optional[int] = ..., output: _Optional[str] = ...) -> None: ...

class Health(_message.Message):
    __slots__ = ("status", "failing_streak", "log", "pid", "started_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILING_STREAK_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    status: str
    failing_streak: int
    log: _containers.RepeatedCompositeFieldContainer[HealthcheckResult]
    pid: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[str] = ..., failing_streak: _Optional[int] = ..., log: _Optional[_Iterable[_Union[HealthcheckResult, _Mapping]]] = ..., pid: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HealthStatus(_message.Message):
    __slots__ = ("container_id", "status")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    status: str
    def __init__(self, container_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...
