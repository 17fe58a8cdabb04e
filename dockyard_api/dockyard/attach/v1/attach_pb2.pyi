import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttachRequest(_message.Message):
    __slots__ = ("open", "stdin", "resize", "close_stdin", "detach")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    open: Open
    stdin: bytes
    resize: Resize
    close_stdin: bool
    detach: bool
    def __init__(self, open: _Optional[_Union[Open, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[Resize, _Mapping]] = ..., close_stdin: _Optional[bool] = ..., detach: _Optional[bool] = ...) -> None: ...

class Open(_message.Message):
    __slots__ = ("container_id", "stdin", "detach_keys")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    DETACH_KEYS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    stdin: bool
    detach_keys: str
    def __init__(self, container_id: _Optional[str] = ..., stdin: _Optional[bool] = ..., detach_keys: _Optional[str] = ...) -> None: ...

class Resize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Attached(_message.Message):
    __slots__ = ("tty", "stdin")
    TTY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    tty: bool
    stdin: bool
    def __init__(self, tty: _Optional[bool] = ..., stdin: _Optional[bool] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class End(_message.Message):
    __slots__ = ("detached", "exit_status", "exited_at")
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXITED_AT_FIELD_NUMBER: _ClassVar[int]
    detached: bool
    exit_status: int
    exited_at: _timestamp_pb2.Timestamp
    def __init__(self, detached: _Optional[bool] = ..., exit_status: _Optional[int] = ..., exited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AttachResponse(_message.Message):
    __slots__ = ("attached", "output", "end")
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    attached: Attached
    output: Output
    end: End
    def __init__(self, attached: _Optional[_Union[Attached, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., end: _Optional[_Union[End, _Mapping]] = ...) -> None: ...
