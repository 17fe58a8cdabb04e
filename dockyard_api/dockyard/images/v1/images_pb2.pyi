from dockyard_api.containerd.types import descriptor_pb2 as _descriptor_pb2
from dockyard_api.containerd.types import platform_pb2 as _platform_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImportOptions(_message.Message):
    __slots__ = ("index_name", "base_name", "all_platforms", "platform", "unpack", "snapshotter", "digests", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_NAME_FIELD_NUMBER: _ClassVar[int]
    ALL_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    UNPACK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    index_name: str
    base_name: str
    all_platforms: bool
    platform: str
    unpack: bool
    snapshotter: str
    digests: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, index_name: _Optional[str] = ..., base_name: _Optional[str] = ..., all_platforms: _Optional[bool] = ..., platform: _Optional[str] = ..., unpack: _Optional[bool] = ..., snapshotter: _Optional[str] = ..., digests: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("options", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: ImportOptions
    chunk: bytes
    def __init__(self, options: _Optional[_Union[ImportOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class BlobProgress(_message.Message):
    __slots__ = ("path", "offset", "total", "digest")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    total: int
    digest: str
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class ImportedImage(_message.Message):
    __slots__ = ("name", "target", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    created: bool
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ImportDone(_message.Message):
    __slots__ = ("format", "index", "images", "bytes_read")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    format: str
    index: _descriptor_pb2.Descriptor
    images: _containers.RepeatedCompositeFieldContainer[ImportedImage]
    bytes_read: int
    def __init__(self, format: _Optional[str] = ..., index: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., images: _Optional[_Iterable[_Union[ImportedImage, _Mapping]]] = ..., bytes_read: _Optional[int] = ...) -> None: ...

class ImportProgress(_message.Message):
    __slots__ = ("blob", "image", "unpack", "done", "error")
    BLOB_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UNPACK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    blob: BlobProgress
    image: ImportedImage
    unpack: UnpackProgress
    done: ImportDone
    error: _status_pb2.Status
    def __init__(self, blob: _Optional[_Union[BlobProgress, _Mapping]] = ..., image: _Optional[_Union[ImportedImage, _Mapping]] = ..., unpack: _Optional[_Union[UnpackProgress, _Mapping]] = ..., done: _Optional[_Union[ImportDone, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("names", "platform", "all_platforms", "format")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    ALL_PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    platform: str
    all_platforms: bool
    format: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., platform: _Optional[str] = ..., all_platforms: _Optional[bool] = ..., format: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class UnpackRequest(_message.Message):
    __slots__ = ("name", "snapshotter", "platform")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    name: str
    snapshotter: str
    platform: str
    def __init__(self, name: _Optional[str] = ..., snapshotter: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class LayerProgress(_message.Message):
    __slots__ = ("index", "total", "layer", "diff_id", "chain_id", "state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DIFF_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    total: int
    layer: _descriptor_pb2.Descriptor
    diff_id: str
    chain_id: str
    state: str
    def __init__(self, index: _Optional[int] = ..., total: _Optional[int] = ..., layer: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., diff_id: _Optional[str] = ..., chain_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class UnpackDone(_message.Message):
    __slots__ = ("manifest", "chain_id", "snapshotter", "extracted", "reused")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    manifest: _descriptor_pb2.Descriptor
    chain_id: str
    snapshotter: str
    extracted: int
    reused: int
    def __init__(self, manifest: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., chain_id: _Optional[str] = ..., snapshotter: _Optional[str] = ..., extracted: _Optional[int] = ..., reused: _Optional[int] = ...) -> None: ...

class UnpackProgress(_message.Message):
    __slots__ = ("layer", "done")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    layer: LayerProgress
    done: UnpackDone
    def __init__(self, layer: _Optional[_Union[LayerProgress, _Mapping]] = ..., done: _Optional[_Union[UnpackDone, _Mapping]] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("name", "platform")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    name: str
    platform: str
    def __init__(self, name: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("descriptor", "diff_id", "chain_id")
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    DIFF_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    descriptor: _descriptor_pb2.Descriptor
    diff_id: str
    chain_id: str
    def __init__(self, descriptor: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., diff_id: _Optional[str] = ..., chain_id: _Optional[str] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("name", "target", "manifest", "config", "config_json", "layers", "size", "platform", "platforms", "unpacked")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    UNPACKED_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    manifest: _descriptor_pb2.Descriptor
    config: _descriptor_pb2.Descriptor
    config_json: bytes
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    size: int
    platform: _platform_pb2.Platform
    platforms: _containers.RepeatedCompositeFieldContainer[_platform_pb2.Platform]
    unpacked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., manifest: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., config: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., config_json: _Optional[bytes] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., size: _Optional[int] = ..., platform: _Optional[_Union[_platform_pb2.Platform, _Mapping]] = ..., platforms: _Optional[_Iterable[_Union[_platform_pb2.Platform, _Mapping]]] = ..., unpacked: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("names", "platform", "snapshotter")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTTER_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    platform: str
    snapshotter: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., platform: _Optional[str] = ..., snapshotter: _Optional[str] = ...) -> None: ...

class ImageCheck(_message.Message):
    __slots__ = ("name", "target", "complete", "present_size", "total_size", "missing", "unpacked", "platforms", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    UNPACKED_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: _descriptor_pb2.Descriptor
    complete: bool
    present_size: int
    total_size: int
    missing: _containers.RepeatedCompositeFieldContainer[_descriptor_pb2.Descriptor]
    unpacked: bool
    platforms: _containers.RepeatedCompositeFieldContainer[_platform_pb2.Platform]
    error: str
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[_descriptor_pb2.Descriptor, _Mapping]] = ..., complete: _Optional[bool] = ..., present_size: _Optional[int] = ..., total_size: _Optional[int] = ..., missing: _Optional[_Iterable[_Union[_descriptor_pb2.Descriptor, _Mapping]]] = ..., unpacked: _Optional[bool] = ..., platforms: _Optional[_Iterable[_Union[_platform_pb2.Platform, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageCheck]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageCheck, _Mapping]]] = ...) -> None: ...
