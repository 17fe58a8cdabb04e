"""A RUN step's supplementary groups (supervisor/build/copy.py additional_gids): the primary group
and the /etc/group groups that list the user's passwd name, as containerd and buildah set them."""

from __future__ import annotations

from pathlib import Path

from supervisor.build.copy import Owner, additional_gids


def _root(tmp_path: Path, passwd: str, group: str | None) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (tmp_path / "etc" / "group").write_text(group)
    return tmp_path


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:root,app\naudio:x:29:app\nstaff:x:50:other\napp:x:1001:\nbad:x:no:app\n"


def test_primary_and_memberships(tmp_path: Path) -> None:
    root = _root(tmp_path, PASSWD, GROUP)
    assert additional_gids(Owner(1000, 1001), root) == [10, 29, 1001]
    assert additional_gids(Owner(1000, 50), root) == [10, 29, 50]  # USER app:staff
    assert additional_gids(Owner(0, 0), root) == [0, 10]


def test_unknown_uid_or_no_group_file(tmp_path: Path) -> None:
    root = _root(tmp_path, PASSWD, None)
    assert additional_gids(Owner(1000, 1001), root) == [1001]
    assert additional_gids(Owner(4242, 7), root) == [7]
