"""[cri] stream_server_address and stream_server_port: the config keys (defaults, validation) and the streaming
server listening where they say and naming it in its URLs."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import Config, ConfigError, load
from supervisor.cri.streaming.server import StreamServer
from supervisor.cri.streaming.types import PortForwardRequest


def config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load(path, {})


def test_defaults_are_loopback_and_any_port(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[cri]\nenabled = true\n")
    assert (cfg.cri_stream_address, cfg.cri_stream_port) == ("127.0.0.1", 0)
    assert (Config().cri_stream_address, Config().cri_stream_port) == ("127.0.0.1", 0)


@pytest.mark.parametrize("address", ["10.1.2.3", "0.0.0.0", "::1", "fd00::5"])
def test_an_address_and_port_are_taken(tmp_path: Path, address: str) -> None:
    cfg = config(tmp_path, f'[cri]\nstream_server_address = "{address}"\nstream_server_port = 10010\n')
    assert (cfg.cri_stream_address, cfg.cri_stream_port) == (address, 10010)


@pytest.mark.parametrize(("setting", "message"), [
    ('stream_server_address = "localhost"', "cri.stream_server_address must be an IP address, not 'localhost'"),
    ('stream_server_address = ""', "cri.stream_server_address must be an IP address, not ''"),
    ('stream_server_address = "10.0.0.300"', "cri.stream_server_address must be an IP address"),
    ("stream_server_address = 10", "cri.stream_server_address must be a str, not 10"),
    ("stream_server_port = 65536", "cri.stream_server_port must be a TCP port (0-65535; 0: any free one), not 65536"),
    ("stream_server_port = -1", "cri.stream_server_port must be a TCP port"),
    ('stream_server_port = "10010"', "cri.stream_server_port must be a int, not '10010'"),
    ("stream_server_port = true", "cri.stream_server_port must be a int, not True"),
    ("stream_port = 10010", "unknown setting 'cri.stream_port'"),
])
def test_bad_values_say_what_to_fix(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, f"[cri]\n{setting}\n")
    assert message in str(err.value)


class _NoBackend:
    """The server is only asked for URLs here: no session reaches a backend."""

    async def exec(self, request: Any) -> Any:
        raise AssertionError("no exec expected")

    async def attach(self, request: Any) -> Any:
        raise AssertionError("no attach expected")

    async def dial(self, pod_id: str, port: int) -> Any:
        raise AssertionError("no port forward expected")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_server_listens_on_the_configured_port_and_names_it() -> None:
    port = _free_port()

    async def main() -> str:
        server = StreamServer(_NoBackend(), "127.0.0.1", port)
        try:
            url = await server.url(PortForwardRequest("pod", (80,)))
            _, writer = await asyncio.open_connection("127.0.0.1", port)  # something listens there
            writer.close()
            await writer.wait_closed()
            return url
        finally:
            await server.close()

    url = asyncio.run(main())
    assert url.startswith(f"http://127.0.0.1:{port}/portforward/"), url
