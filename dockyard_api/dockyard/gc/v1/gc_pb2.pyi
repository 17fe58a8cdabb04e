import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CollectRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectResponse(_message.Message):
    __slots__ = ("content_removed", "snapshots_removed", "ingests_removed", "leases_removed", "duration")
    CONTENT_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    INGESTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    LEASES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    content_removed: int
    snapshots_removed: int
    ingests_removed: int
    leases_removed: int
    duration: _duration_pb2.Duration
    def __init__(self, content_removed: _Optional[int] = ..., snapshots_removed: _Optional[int] = ..., ingests_removed: _Optional[int] = ..., leases_removed: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
