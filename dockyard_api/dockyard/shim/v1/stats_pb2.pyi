import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("id", "interval_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    interval_ms: int
    def __init__(self, id: _Optional[str] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class UnwatchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CPU(_message.Message):
    __slots__ = ("usage_total_ns", "usage_user_ns", "usage_system_ns", "throttling_periods", "throttled_periods", "throttled_time_ns")
    USAGE_TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    USAGE_USER_NS_FIELD_NUMBER: _ClassVar[int]
    USAGE_SYSTEM_NS_FIELD_NUMBER: _ClassVar[int]
    THROTTLING_PERIODS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_PERIODS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    usage_total_ns: int
    usage_user_ns: int
    usage_system_ns: int
    throttling_periods: int
    throttled_periods: int
    throttled_time_ns: int
    def __init__(self, usage_total_ns: _Optional[int] = ..., usage_user_ns: _Optional[int] = ..., usage_system_ns: _Optional[int] = ..., throttling_periods: _Optional[int] = ..., throttled_periods: _Optional[int] = ..., throttled_time_ns: _Optional[int] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("usage", "limit", "cache", "rss", "max_usage", "failcnt", "oom_kills", "inactive_file", "swap_usage")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    RSS_FIELD_NUMBER: _ClassVar[int]
    MAX_USAGE_FIELD_NUMBER: _ClassVar[int]
    FAILCNT_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLS_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FILE_FIELD_NUMBER: _ClassVar[int]
    SWAP_USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: int
    limit: int
    cache: int
    rss: int
    max_usage: int
    failcnt: int
    oom_kills: int
    inactive_file: int
    swap_usage: int
    def __init__(self, usage: _Optional[int] = ..., limit: _Optional[int] = ..., cache: _Optional[int] = ..., rss: _Optional[int] = ..., max_usage: _Optional[int] = ..., failcnt: _Optional[int] = ..., oom_kills: _Optional[int] = ..., inactive_file: _Optional[int] = ..., swap_usage: _Optional[int] = ...) -> None: ...

class Pids(_message.Message):
    __slots__ = ("current", "limit")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    current: int
    limit: int
    def __init__(self, current: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class BlockIO(_message.Message):
    __slots__ = ("read_bytes", "write_bytes", "read_ops", "write_ops")
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_OPS_FIELD_NUMBER: _ClassVar[int]
    WRITE_OPS_FIELD_NUMBER: _ClassVar[int]
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int
    def __init__(self, read_bytes: _Optional[int] = ..., write_bytes: _Optional[int] = ..., read_ops: _Optional[int] = ..., write_ops: _Optional[int] = ...) -> None: ...

class PressureLine(_message.Message):
    __slots__ = ("avg10", "avg60", "avg300", "total_us")
    AVG10_FIELD_NUMBER: _ClassVar[int]
    AVG60_FIELD_NUMBER: _ClassVar[int]
    AVG300_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    avg10: float
    avg60: float
    avg300: float
    total_us: int
    def __init__(self, avg10: _Optional[float] = ..., avg60: _Optional[float] = ..., avg300: _Optional[float] = ..., total_us: _Optional[int] = ...) -> None: ...

class Pressure(_message.Message):
    __slots__ = ("some", "full")
    SOME_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    some: PressureLine
    full: PressureLine
    def __init__(self, some: _Optional[_Union[PressureLine, _Mapping]] = ..., full: _Optional[_Union[PressureLine, _Mapping]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("id", "namespace", "timestamp", "seq", "cgroup_version", "cpu", "memory", "pids", "blkio", "cpu_pressure", "memory_pressure", "io_pressure", "end")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CGROUP_VERSION_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    BLKIO_FIELD_NUMBER: _ClassVar[int]
    CPU_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    IO_PRESSURE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    id: str
    namespace: str
    timestamp: _timestamp_pb2.Timestamp
    seq: int
    cgroup_version: int
    cpu: CPU
    memory: Memory
    pids: Pids
    blkio: BlockIO
    cpu_pressure: Pressure
    memory_pressure: Pressure
    io_pressure: Pressure
    end: bool
    def __init__(self, id: _Optional[str] = ..., namespace: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seq: _Optional[int] = ..., cgroup_version: _Optional[int] = ..., cpu: _Optional[_Union[CPU, _Mapping]] = ..., memory: _Optional[_Union[Memory, _Mapping]] = ..., pids: _Optional[_Union[Pids, _Mapping]] = ..., blkio: _Optional[_Union[BlockIO, _Mapping]] = ..., cpu_pressure: _Optional[_Union[Pressure, _Mapping]] = ..., memory_pressure: _Optional[_Union[Pressure, _Mapping]] = ..., io_pressure: _Optional[_Union[Pressure, _Mapping]] = ..., end: _Optional[bool] = ...) -> None: ...
