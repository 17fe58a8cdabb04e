from dockyard_api.dockyard.network.v1 import network_pb2 as _network_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetworkAttach(_message.Message):
    __slots__ = ("container_id", "attachment")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    attachment: _network_pb2.Attachment
    def __init__(self, container_id: _Optional[str] = ..., attachment: _Optional[_Union[_network_pb2.Attachment, _Mapping]] = ...) -> None: ...

class NetworkDetach(_message.Message):
    __slots__ = ("container_id", "attachment")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    attachment: _network_pb2.Attachment
    def __init__(self, container_id: _Optional[str] = ..., attachment: _Optional[_Union[_network_pb2.Attachment, _Mapping]] = ...) -> None: ...
