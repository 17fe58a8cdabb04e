from dockyard_api.containerd.types import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommitRequest(_message.Message):
    __slots__ = ("container_id", "ref", "pause", "changes", "message", "author", "compression")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    ref: str
    pause: bool
    changes: _containers.RepeatedScalarFieldContainer[str]
    message: str
    author: str
    compression: str
    def __init__(self, container_id: _Optional[str] = ..., ref: _Optional[str] = ..., pause: _Optional[bool] = ..., changes: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., author: _Optional[str] = ..., compression: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("name", "target", "config", "layer", "diff_id", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DIFF_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    config: _descriptor_pb2.Descriptor
    layer: _descriptor_pb2.Descriptor
    diff_id: str
    created: bool
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., config: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., layer: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., diff_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...
