from dockyard_api.containerd.types import descriptor_pb2 as _descriptor_pb2
from dockyard_api.dockyard.images.v1 import images_pb2 as _images_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Credentials(_message.Message):
    __slots__ = ("username", "secret")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    username: str
    secret: str
    def __init__(self, username: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class RemoteOptions(_message.Message):
    __slots__ = ("plain_http", "skip_verify", "credentials", "timeout_seconds")
    PLAIN_HTTP_FIELD_NUMBER: _ClassVar[int]
    SKIP_VERIFY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    plain_http: bool
    skip_verify: bool
    credentials: Credentials
    timeout_seconds: int
    def __init__(self, plain_http: _Optional[bool] = ..., skip_verify: _Optional[bool] = ..., credentials: _Optional[_Union[Credentials, _Mapping]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("ref", "platform", "all_platforms", "unpack", "snapshotter", "remote", "labels", "max_concurrent_downloads")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REF_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    ALL_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    UNPACK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    platform: str
    all_platforms: bool
    unpack: bool
    snapshotter: str
    remote: RemoteOptions
    labels: _containers.ScalarMap[str, str]
    max_concurrent_downloads: int
    def __init__(self, ref: _Optional[str] = ..., platform: _Optional[str] = ..., all_platforms: _Optional[bool] = ..., unpack: _Optional[bool] = ..., snapshotter: _Optional[str] = ..., remote: _Optional[_Union[RemoteOptions, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_concurrent_downloads: _Optional[int] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("ref", "local", "platform", "remote", "chunk_size", "max_concurrent_uploads")
    REF_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    local: str
    platform: str
    remote: RemoteOptions
    chunk_size: int
    max_concurrent_uploads: int
    def __init__(self, ref: _Optional[str] = ..., local: _Optional[str] = ..., platform: _Optional[str] = ..., remote: _Optional[_Union[RemoteOptions, _Mapping]] = ..., chunk_size: _Optional[int] = ..., max_concurrent_uploads: _Optional[int] = ...) -> None: ...

class BlobProgress(_message.Message):
    __slots__ = ("ref", "descriptor", "state", "offset", "total")
    REF_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ref: str
    descriptor: _descriptor_pb2.Descriptor
    state: str
    offset: int
    total: int
    def __init__(self, ref: _Optional[str] = ..., descriptor: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., state: _Optional[str] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class Resolved(_message.Message):
    __slots__ = ("name", "target", "host")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    host: str
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., host: _Optional[str] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("name", "target", "created", "bytes_transferred", "chain_id", "snapshotter")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TRANSFERRED_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    created: bool
    bytes_transferred: int
    chain_id: str
    snapshotter: str
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., created: _Optional[bool] = ..., bytes_transferred: _Optional[int] = ..., chain_id: _Optional[str] = ..., snapshotter: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("resolved", "blob", "unpack", "done")
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    UNPACK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    resolved: Resolved
    blob: BlobProgress
    unpack: _images_pb2.UnpackProgress
    done: Done
    def __init__(self, resolved: _Optional[_Union[Resolved, _Mapping]] = ..., blob: _Optional[_Union[BlobProgress, _Mapping]] = ..., unpack: _Optional[_Union[_images_pb2.UnpackProgress, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ...) -> None: ...

class TagRequest(_message.Message):
    __slots__ = ("source", "target", "force")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    force: bool
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class TagResponse(_message.Message):
    __slots__ = ("name", "target", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    created: bool
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("server", "remote")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    server: str
    remote: RemoteOptions
    def __init__(self, server: _Optional[str] = ..., remote: _Optional[_Union[RemoteOptions, _Mapping]] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("server",)
    SERVER_FIELD_NUMBER: _ClassVar[int]
    server: str
    def __init__(self, server: _Optional[str] = ...) -> None: ...
