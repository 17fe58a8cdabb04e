import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("version", "revision", "root", "state", "address", "pid", "started_at", "snapshotters", "default_snapshotter", "cgroup_driver", "python_version", "ksm")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    CGROUP_DRIVER_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    KSM_FIELD_NUMBER: _ClassVar[int]
    version: str
    revision: str
    root: str
    state: str
    address: str
    pid: int
    started_at: _timestamp_pb2.Timestamp
    snapshotters: _containers.RepeatedScalarFieldContainer[str]
    default_snapshotter: str
    cgroup_driver: str
    python_version: str
    ksm: str
    def __init__(self, version: _Optional[str] = ..., revision: _Optional[str] = ..., root: _Optional[str] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshotters: _Optional[_Iterable[str]] = ..., default_snapshotter: _Optional[str] = ..., cgroup_driver: _Optional[str] = ..., python_version: _Optional[str] = ..., ksm: _Optional[str] = ...) -> None: ...
