"""A ValueError out of applying a layer maps to one generic message: NUL bytes are refused by
name before any system call (`_check_entry`), so the mapping does not guess from Python's text."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import supervisor.archive.apply as apply_mod
from dockyard_common.errors import InvalidArgument
from supervisor.archive.apply import _unexpected, apply_layer
from tests.unit.archive_fixtures import build_tar, file


@pytest.fixture
def target() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dockyard-unexpected-"))
    try:
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("text", ["embedded null byte", "NUL character", "invalid literal for int()"])
def test_value_errors_map_to_one_generic_message(text: str) -> None:
    err = _unexpected("tar entry 'f'", ValueError(text))
    assert isinstance(err, InvalidArgument) and err.message == "tar entry 'f': a header value is invalid"


def test_a_value_error_from_a_system_call_is_named_by_its_entry(target: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kw: object) -> None:
        raise ValueError("embedded null byte")

    monkeypatch.setattr(apply_mod.os, "utime", refuse)
    with pytest.raises(InvalidArgument) as info:
        apply_layer(io.BytesIO(build_tar([file("f", b"1")])), target, whiteout_mode="delete")  # type: ignore[arg-type]
    assert "'f'" in info.value.message and "a header value is invalid" in info.value.message
    assert "null" not in info.value.message.lower()
