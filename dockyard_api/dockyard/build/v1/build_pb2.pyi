import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheRecord(_message.Message):
    __slots__ = ("id", "type", "size", "created_at", "last_used_at", "in_use", "shared", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    size: int
    created_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    in_use: bool
    shared: bool
    description: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., size: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_use: _Optional[bool] = ..., shared: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class ListCacheResponse(_message.Message):
    __slots__ = ("records", "size", "reclaimable")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RECLAIMABLE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[CacheRecord]
    size: int
    reclaimable: int
    def __init__(self, records: _Optional[_Iterable[_Union[CacheRecord, _Mapping]]] = ..., size: _Optional[int] = ..., reclaimable: _Optional[int] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ("all", "unused_for_seconds", "keep_storage")
    ALL_FIELD_NUMBER: _ClassVar[int]
    UNUSED_FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_STORAGE_FIELD_NUMBER: _ClassVar[int]
    all: bool
    unused_for_seconds: int
    keep_storage: int
    def __init__(self, all: _Optional[bool] = ..., unused_for_seconds: _Optional[int] = ..., keep_storage: _Optional[int] = ...) -> None: ...

class PruneResponse(_message.Message):
    __slots__ = ("removed", "reclaimed_bytes")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    RECLAIMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedScalarFieldContainer[str]
    reclaimed_bytes: int
    def __init__(self, removed: _Optional[_Iterable[str]] = ..., reclaimed_bytes: _Optional[int] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class BuildOptions(_message.Message):
    __slots__ = ("dockerfile", "tags", "build_args", "target", "no_cache", "pull", "platform", "labels", "network", "context_key")
    DOCKERFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BUILD_ARGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    dockerfile: bytes
    tags: _containers.RepeatedScalarFieldContainer[str]
    build_args: _containers.RepeatedCompositeFieldContainer[KeyValue]
    target: str
    no_cache: bool
    pull: bool
    platform: str
    labels: _containers.RepeatedCompositeFieldContainer[KeyValue]
    network: str
    context_key: str
    def __init__(self, dockerfile: _Optional[bytes] = ..., tags: _Optional[_Iterable[str]] = ..., build_args: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., target: _Optional[str] = ..., no_cache: _Optional[bool] = ..., pull: _Optional[bool] = ..., platform: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., network: _Optional[str] = ..., context_key: _Optional[str] = ...) -> None: ...

class ContextEntry(_message.Message):
    __slots__ = ("path", "mode", "size", "mtime_ns", "linkname", "link_group")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    LINKNAME_FIELD_NUMBER: _ClassVar[int]
    LINK_GROUP_FIELD_NUMBER: _ClassVar[int]
    path: str
    mode: int
    size: int
    mtime_ns: int
    linkname: str
    link_group: str
    def __init__(self, path: _Optional[str] = ..., mode: _Optional[int] = ..., size: _Optional[int] = ..., mtime_ns: _Optional[int] = ..., linkname: _Optional[str] = ..., link_group: _Optional[str] = ...) -> None: ...

class ContextManifest(_message.Message):
    __slots__ = ("entries", "last")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ContextEntry]
    last: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[ContextEntry, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("options", "chunk", "manifest")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    options: BuildOptions
    chunk: bytes
    manifest: ContextManifest
    def __init__(self, options: _Optional[_Union[BuildOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ..., manifest: _Optional[_Union[ContextManifest, _Mapping]] = ...) -> None: ...

class ContextWanted(_message.Message):
    __slots__ = ("indexes", "last")
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedScalarFieldContainer[int]
    last: bool
    def __init__(self, indexes: _Optional[_Iterable[int]] = ..., last: _Optional[bool] = ...) -> None: ...

class ContextReceived(_message.Message):
    __slots__ = ("bytes", "entries", "reused")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    entries: int
    reused: int
    def __init__(self, bytes: _Optional[int] = ..., entries: _Optional[int] = ..., reused: _Optional[int] = ...) -> None: ...

class BuildEvent(_message.Message):
    __slots__ = ("kind", "step", "total", "stage", "text", "data", "stream")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    kind: str
    step: int
    total: int
    stage: str
    text: str
    data: bytes
    stream: str
    def __init__(self, kind: _Optional[str] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., stage: _Optional[str] = ..., text: _Optional[str] = ..., data: _Optional[bytes] = ..., stream: _Optional[str] = ...) -> None: ...

class BuildResult(_message.Message):
    __slots__ = ("manifest_digest", "config_digest", "tags")
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    manifest_digest: str
    config_digest: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, manifest_digest: _Optional[str] = ..., config_digest: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class BuildResponse(_message.Message):
    __slots__ = ("context", "event", "result", "error", "wanted")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    context: ContextReceived
    event: BuildEvent
    result: BuildResult
    error: _status_pb2.Status
    wanted: ContextWanted
    def __init__(self, context: _Optional[_Union[ContextReceived, _Mapping]] = ..., event: _Optional[_Union[BuildEvent, _Mapping]] = ..., result: _Optional[_Union[BuildResult, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., wanted: _Optional[_Union[ContextWanted, _Mapping]] = ...) -> None: ...
