"""CRI records as stored on containerd's container records, read back after a client changed them
(the Containers API lets any client rewrite labels and extensions): refused in words, never in
Python's ("__init__() got an unexpected keyword argument", "'x' is not a valid NamespaceMode")."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.types import AnyValue, Container
from supervisor.cri.container_records import METADATA_EXTENSION, METADATA_TYPE_URL, found_of
from supervisor.cri.container_types import ContainerConfig
from supervisor.cri.sandbox_types import PodConfig

PYTHON_WORDS = ("__init__", "keyword argument", "is not a valid", "object has no attribute", "NoneType", "Error")


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidArgument) as err:
        call(*args)
    message = err.value.message
    assert not any(w in message for w in PYTHON_WORDS), message
    return message


@pytest.mark.parametrize("data", [{}, {"name": "x"}, {"bogus": 1}, [], "x", {"namespaces": "host"}])
def test_a_changed_pod_config_is_refused_in_words(data: Any) -> None:
    assert "stored pod sandbox config is not readable" in refused(PodConfig.from_json, data)


@pytest.mark.parametrize("data", [{}, {"image": 1}, {"bogus": 1}, None])
def test_a_changed_container_config_is_refused_in_words(data: Any) -> None:
    assert "stored container config is not readable" in refused(ContainerConfig.from_json, data)


@pytest.mark.parametrize(("value", "words"), [
    (b"{x", "it is not valid JSON"),
    (b'{"bogus": 1}', "a field is missing or unknown"),
    (b"[]", "a field is missing or unknown"),
])
def test_changed_metadata_is_refused_in_words(value: bytes, words: str) -> None:
    record = Container(id="c", runtime_name="io.containerd.runc.v2", spec=None,
                       extensions={METADATA_EXTENSION: AnyValue(METADATA_TYPE_URL, value)})
    message = refused(found_of, record)
    assert "its stored CRI metadata is not readable" in message and words in message, message
