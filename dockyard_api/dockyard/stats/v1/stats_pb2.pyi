from dockyard_api.dockyard.shim.v1 import stats_pb2 as _stats_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("ids", "filters", "all", "interval_ms")
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    interval_ms: int
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("samples", "dropped", "networks")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_stats_pb2.Sample]
    dropped: int
    networks: _containers.RepeatedCompositeFieldContainer[NetworkStats]
    def __init__(self, samples: _Optional[_Iterable[_Union[_stats_pb2.Sample, _Mapping]]] = ..., dropped: _Optional[int] = ..., networks: _Optional[_Iterable[_Union[NetworkStats, _Mapping]]] = ...) -> None: ...

class NetworkStats(_message.Message):
    __slots__ = ("id", "seq", "interfaces")
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    id: str
    seq: int
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceStats]
    def __init__(self, id: _Optional[str] = ..., seq: _Optional[int] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceStats, _Mapping]]] = ...) -> None: ...

class InterfaceStats(_message.Message):
    __slots__ = ("name", "rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TX_DROPPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int
    def __init__(self, name: _Optional[str] = ..., rx_bytes: _Optional[int] = ..., rx_packets: _Optional[int] = ..., rx_errors: _Optional[int] = ..., rx_dropped: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., tx_packets: _Optional[int] = ..., tx_errors: _Optional[int] = ..., tx_dropped: _Optional[int] = ...) -> None: ...
