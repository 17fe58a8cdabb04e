"""Python's TarFile without its list of entries, for the tars dock streams.

tarfile keeps every entry it reads or writes (`members`, ~370 bytes each) for `getmember` and
random access, which a stream never uses: `dock export` or `dock cp` of a tree of a million
files held ~370 MB of them, `dock diff` of a container that made them as much. `Unkept.open`
takes tarfile.open's arguments; iteration, `extractfile` and `addfile` work as before, and
`getmember`/`getmembers` find nothing (hard links are made from the name already extracted,
as they are in a stream).
"""

from __future__ import annotations

import tarfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import SupportsRead


class Unkept(tarfile.TarFile):
    members: list[tarfile.TarInfo]  # TarFile's own, which typeshed does not declare

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()  # iteration asks next() for each entry once the list is empty
        return member

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: SupportsRead[bytes] | None = None) -> None:
        super().addfile(tarinfo, fileobj)
        self.members.clear()
