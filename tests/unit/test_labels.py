"""containerd's label rules."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.labels import MAX_SIZE, validate, validate_label


@pytest.mark.parametrize(("key", "value"), ids=range(7), argvalues=[
    ("a", ""),
    ("containerd.io/gc.ref.content.l.0", "sha256:" + "0" * 64),
    ("k", "v" * (MAX_SIZE - 1)),                  # exactly the limit
    ("k" * (MAX_SIZE - 1), "v"),
    ("k" * MAX_SIZE, ""),
    ("ключ", "é" * 2044),                         # 8 + 4088 bytes
    ("with space and \"quotes\"", "any\nvalue"),
])
def test_valid(key: str, value: str) -> None:
    validate_label(key, value)
    validate({key: value})


@pytest.mark.parametrize(("key", "value", "shown"), ids=range(6), argvalues=[
    ("k", "v" * MAX_SIZE, "k"),
    ("k" * MAX_SIZE, "v", "kkkkkkkkkk"),          # the key is cut to 10 bytes in the message
    ("containerd.io/huge", "x" * MAX_SIZE, "containerd"),
    ("ключ", "é" * 2045, "ключ"),                 # 8 + 4090 bytes: too many, though few chars
    ("ééééé6", "x" * MAX_SIZE, "ééééé"),          # a cut through a character drops it
    ("éééééé", "x" * MAX_SIZE, "ééééé"),
])
def test_too_big(key: str, value: str, shown: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_label(key, value)
    assert info.value.message == (
        f"label key and value greater than maximum size (4096 bytes), key: {shown}")


def test_empty_key() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate({"ok": "1", "": "x"})
    assert str(info.value) == "label key must not be empty: invalid argument"


def test_context_prefixes_the_message() -> None:
    validate({}, "image.Labels")
    with pytest.raises(InvalidArgument) as info:
        validate({"k": "v" * MAX_SIZE}, "image.Labels")
    assert str(info.value) == ("image.Labels: label key and value greater than maximum size "
                               "(4096 bytes), key: k: invalid argument")
