"""ID mappings as snapshot labels and mount options carry them (dockyard_common/idmap.py)."""

from __future__ import annotations

import pytest

from dockyard_common import idmap
from dockyard_common.errors import InvalidArgument
from dockyard_common.idmap import IDMap


def test_parse_and_format_round_trip() -> None:
    maps = idmap.parse("0:100000:65536,65536:300000:10")
    assert maps == (IDMap(0, 100000, 65536), IDMap(65536, 300000, 10))
    assert idmap.format_maps(maps) == "0:100000:65536,65536:300000:10"


@pytest.mark.parametrize("text", ["", "0:1", "0:1:2:3", "a:1:2", "0:-1:5", "0:1:0", "-1:1:1",
                                  "0:4294967000:65536", "4294967295:0:1", " 0:1:1"])
def test_what_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="want <container id>:<host id>:<size>"):
        idmap.parse(text, "label x")


@pytest.mark.parametrize("text, side", [("0:1000:10,5:5000:10", "container id"),
                                        ("0:1000:10,20:1005:10", "host id")])
def test_overlapping_ranges_are_refused(text: str, side: str) -> None:
    with pytest.raises(InvalidArgument, match=f"the {side} ranges overlap"):
        idmap.parse(text)


def test_host_id_of() -> None:
    maps = idmap.parse("0:100000:1000,1000:500000:10")
    assert idmap.host_id_of(maps) == 100000
    assert idmap.host_id_of(maps, 999) == 100999
    assert idmap.host_id_of(maps, 1005) == 500005
    assert idmap.host_id_of(maps, 1010) is None
    assert idmap.host_id_of(idmap.parse("1:5:1")) is None


def test_split_options() -> None:
    rest, uids, gids = idmap.split_options(["index=off", "uidmap=0:100:5", "lowerdir=/a:/b", "gidmap=0:200:5"])
    assert rest == ["index=off", "lowerdir=/a:/b"]
    assert uids == (IDMap(0, 100, 5),) and gids == (IDMap(0, 200, 5),)
    assert idmap.split_options(["ro"]) == (["ro"], (), ())
    with pytest.raises(InvalidArgument, match="uidmap and gidmap go together"):
        idmap.split_options(["uidmap=0:100:5"])
    with pytest.raises(InvalidArgument, match="mount option gidmap"):
        idmap.split_options(["uidmap=0:100:5", "gidmap=zero"])
