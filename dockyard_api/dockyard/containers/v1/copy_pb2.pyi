from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatRequest(_message.Message):
    __slots__ = ("container_id", "path", "follow_link")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_LINK_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    path: str
    follow_link: bool
    def __init__(self, container_id: _Optional[str] = ..., path: _Optional[str] = ..., follow_link: _Optional[bool] = ...) -> None: ...

class PathStat(_message.Message):
    __slots__ = ("name", "size", "mode", "mtime_ns", "link_target", "uid", "gid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    LINK_TARGET_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    mode: int
    mtime_ns: int
    link_target: str
    uid: int
    gid: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., link_target: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class CopyFromRequest(_message.Message):
    __slots__ = ("container_id", "path", "follow_link")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_LINK_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    path: str
    follow_link: bool
    def __init__(self, container_id: _Optional[str] = ..., path: _Optional[str] = ..., follow_link: _Optional[bool] = ...) -> None: ...

class CopyFromResponse(_message.Message):
    __slots__ = ("stat", "data")
    STAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stat: PathStat
    data: bytes
    def __init__(self, stat: _Optional[_Union[PathStat, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CopyToHeader(_message.Message):
    __slots__ = ("container_id", "path", "copy_uid_gid")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    COPY_UID_GID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    path: str
    copy_uid_gid: bool
    def __init__(self, container_id: _Optional[str] = ..., path: _Optional[str] = ..., copy_uid_gid: _Optional[bool] = ...) -> None: ...

class CopyToRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: CopyToHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[CopyToHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CopyToResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopRequest(_message.Message):
    __slots__ = ("container_id", "ps_args")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PS_ARGS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    ps_args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, container_id: _Optional[str] = ..., ps_args: _Optional[_Iterable[str]] = ...) -> None: ...

class TopRow(_message.Message):
    __slots__ = ("fields",)
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fields: _Optional[_Iterable[str]] = ...) -> None: ...

class TopResponse(_message.Message):
    __slots__ = ("titles", "processes")
    TITLES_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    titles: _containers.RepeatedScalarFieldContainer[str]
    processes: _containers.RepeatedCompositeFieldContainer[TopRow]
    def __init__(self, titles: _Optional[_Iterable[str]] = ..., processes: _Optional[_Iterable[_Union[TopRow, _Mapping]]] = ...) -> None: ...
