"""Named volumes' shared words: the name rule and the container label that lists a container's
volumes. The contract between `dock run` (which writes the label) and supervisor/volumes (which
reads it to know which volumes are in use: a label, so finding a volume's users is a scan of
container records, never of specs).

    dockyard.volume/mounts   JSON list of {"name": "data", "destination": "/var/lib/x", "copy": true}

`copy`: whether the volume is seeded from the image when it is empty (Docker's default; false is
Docker's `nocopy`).

An anonymous volume (`dock run -v /path`, or the image's VOLUME) is a volume like the others,
named by 64 random hex digits and labelled with its owner, so `dock rm -v`, `--rm` (the
daemon's auto-remove) and `dock volume ls` find it by one filter over volume records:

    dockyard.volume/anonymous   "true"
    dockyard.volume/container   the id of the container it was made for
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import json_value

MOUNTS = "dockyard.volume/mounts"
ANONYMOUS = "dockyard.volume/anonymous"
CONTAINER = "dockyard.volume/container"
MAX_NAME = 128
# Docker's rule for volume names (letters or digits first, at least two characters); never a
# path, never hidden (the store keeps its staging entries as dot-names beside the volumes).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")


def check_name(name: str) -> str:
    """`name` if it is a valid volume name, else InvalidArgument saying what is allowed."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidArgument(
            f"volume name {name!r}: want 2 to {MAX_NAME} characters, letters and digits first, "
            "then letters, digits, '_', '.' or '-'")
    return name


@dataclass(frozen=True)
class VolumeMount:
    """A named volume mounted in a container at `destination`."""

    name: str
    destination: str
    copy: bool = True


def encode(mounts: Sequence[VolumeMount]) -> str:
    return json.dumps([{"name": m.name, "destination": m.destination, "copy": m.copy} for m in mounts],
                      separators=(",", ":"))


def decode(value: str) -> list[VolumeMount]:
    """The label's value; InvalidArgument (in words) for anything that is not one."""
    items = json_value(value, f"label {MOUNTS}", InvalidArgument)
    if not isinstance(items, list):
        raise InvalidArgument(f"label {MOUNTS}: want a JSON list of volume mounts")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("destination"), str) or not isinstance(item.get("copy", True), bool):
            raise InvalidArgument(f"label {MOUNTS}: want objects with a name, a destination and copy (true/false)")
        out.append(VolumeMount(check_name(item["name"]), item["destination"], item.get("copy", True)))
    return out


def names_in(labels: Mapping[str, str]) -> set[str]:
    """The volumes a container's labels name; a malformed label names none (it is not ours to
    judge here: the container exists, and a volume it does not parse as using is not in use)."""
    value = labels.get(MOUNTS)
    if not value:
        return set()
    try:
        return {m.name for m in decode(value)}
    except InvalidArgument:
        return set()


def anonymous_name() -> str:
    """A new anonymous volume's name: 64 random hex digits, as Docker's."""
    return secrets.token_hex(32)


def anonymous_labels(cid: str) -> dict[str, str]:
    """The labels of an anonymous volume made for container `cid`."""
    return {ANONYMOUS: "true", CONTAINER: cid}


def anonymous_filter(cid: str) -> str:
    """The volume filter (containerd's syntax) that matches the anonymous volumes of `cid`."""
    return f'labels."{ANONYMOUS}"=="true",labels."{CONTAINER}"=={json.dumps(cid)}'
