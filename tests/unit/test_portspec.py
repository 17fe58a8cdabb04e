"""dockyard_common/portspec.py: Docker's `-p` texts read and written, so that a container's
ports label holds the 256 ports the daemon allows within containerd's 4096-byte label limit."""

from __future__ import annotations

import json
import random

import pytest

from dock.network import network_options
from dockyard_common import netlabels
from dockyard_common.errors import InvalidArgument
from dockyard_common.portspec import Published, compact, parse
from supervisor.labels import MAX_SIZE, validate_label
from supervisor.network import labels as L


def test_runs_become_one_text_each() -> None:
    ports = [*parse("8000-8099:8000-8099"), *parse("127.0.0.1:9000:90/udp"), *parse("7000-7002"),
             *parse("[2001:db8::1]:5000-5001:6000-6001"), *parse("10.0.0.1::53/udp")]
    assert compact(ports) == ["8000-8099:8000-8099", "127.0.0.1:9000:90/udp", "7000-7002",
                              "[2001:db8::1]:5000-5001:6000-6001", "10.0.0.1::53/udp"]


def test_a_run_breaks_where_address_protocol_or_step_changes() -> None:
    ports = [Published(80, 8080), Published(81, 8081, "udp"), Published(82, 8082, "udp", "127.0.0.1"),
             Published(83, 9000, "udp", "127.0.0.1"), Published(84, 0, "udp", "127.0.0.1"),
             Published(85, 0, "udp", "127.0.0.1"), Published(86, 1, "udp", "127.0.0.1")]
    assert compact(ports) == ["8080:80", "8081:81/udp", "127.0.0.1:8082:82/udp", "127.0.0.1:9000:83/udp",
                              "127.0.0.1::84-85/udp", "127.0.0.1:1:86/udp"]


def test_a_host_range_for_one_port_is_one_entry() -> None:
    """Docker's `-p 8000-8010:80`: container port 80 on a free one of those host ports."""
    [one] = parse("127.0.0.1:8000-8010:80/udp")
    assert one == Published(80, 8000, "udp", "127.0.0.1", 8010)
    ports = [Published(79, 7999), *parse("8000-8010:80"), Published(81, 8011)]
    assert compact(ports) == ["7999:79", "8000-8010:80", "8011:81"]  # never part of a run
    assert [p for text in compact(ports) for p in parse(text)] == ports


def test_compact_then_parse_gives_the_ports_back() -> None:
    rng = random.Random(7)
    for _ in range(300):
        ports: list[Published] = []
        for _ in range(rng.randint(0, 40)):
            c = rng.choice([rng.randint(1, 65535), ports[-1].container_port + 1 if ports else 1])
            h = rng.choice([0, rng.randint(1, 65535), ports[-1].host_port + 1 if ports and ports[-1].host_port else 0])
            ports.append(Published(min(c, 65535), min(h, 65535), rng.choice(["tcp", "udp"]),
                                   rng.choice(["", "127.0.0.1", "::1"])))
        assert [p for text in compact(ports) for p in parse(text)] == ports


def test_256_ports_fit_the_label_as_dock_writes_it() -> None:
    # the daemon's limit as ranges, and spread out (no two consecutive) without an address
    spread = [f"{20000 + 2 * i}:{10000 + 2 * i}" for i in range(netlabels.MAX_PORTS)]
    for publish in (spread, ["8000-8255:8000-8255"], ["127.0.0.1:8000-8255:8000-8255/udp"]):
        value = network_options(publish=publish).labels()[netlabels.PORTS]
        validate_label(netlabels.PORTS, value)  # within containerd's 4096 bytes
        req = L.parse({netlabels.PORTS: value})
        assert req is not None and len(req.ports) == netlabels.MAX_PORTS
    # what the label held before: ~70 bytes a port, 55 ports at most
    old = json.dumps([{"host_ip": "", "host_port": 20000 + i, "container_port": 10000 + i, "protocol": "tcp"}
                      for i in range(60)])
    assert len(netlabels.PORTS) + len(old) > MAX_SIZE


def test_ports_past_the_label_size_get_dock_s_own_words() -> None:
    spread = [f"127.0.0.1:{20000 + 2 * i}:{10000 + 2 * i}/udp" for i in range(netlabels.MAX_PORTS)]
    with pytest.raises(InvalidArgument) as err:
        network_options(publish=spread).labels()
    assert "publish consecutive ports as a range" in err.value.message and "256 published ports" in err.value.message


@pytest.mark.parametrize(("spec", "words"), [
    ("8080:80/sctp", "protocol 'sctp' is not tcp or udp"),
    ("9" * 5000, "(5000 characters) is not a port number"),  # not "Exceeds the limit (4300 digits)"
    ("080000", "is not a port number"),
    ("0", "out of range (1-65535)"),
    ("1:2:3:4", "want [IP:]HOST:CONTAINER"),
    ("[::1]8080:80", "want [IPv6]:HOST:CONTAINER"),
    ("[::1]:80", "HOST may be empty"),
    ("localhost:8080:80", "not an IP address"),
    ("90-80", "ends before it starts"),
    ("8080:", "no container port"),
    ("\uff18\uff10", "is not a port number"),  # fullwidth digits: int() would take them
])
def test_bad_texts_are_named(spec: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse(spec, flag="label ports[0]")
    assert words in err.value.message and err.value.message.startswith("invalid label ports[0] ")
    assert len(err.value.message) < 300  # a long text is cut, not echoed
