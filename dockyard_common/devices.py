"""The device numbers the kernel can hold, checked where they enter (a spec, a tar entry, a cgroup
rule) so that an out-of-range one is refused by name instead of failing later in mknod or a
cgroup write with Python's words ("Python int too large to convert to C int")."""

from __future__ import annotations

# The kernel's dev_t: 12 bits of major, 20 of minor.
DEV_MAJOR_MAX = (1 << 12) - 1
DEV_MINOR_MAX = (1 << 20) - 1


def check_device_number(major: int | None, minor: int | None, where: str,
                        error: type[Exception] = ValueError) -> None:
    """`error(message)` naming `where` unless both numbers fit; None (a cgroup rule's "any")
    always fits. `error` lets each caller raise its own domain's kind."""
    if (major is not None and not 0 <= major <= DEV_MAJOR_MAX) or (
            minor is not None and not 0 <= minor <= DEV_MINOR_MAX):
        raise error(f"{where}: device number {major}:{minor} is out of range "
                    f"(major 0-{DEV_MAJOR_MAX}, minor 0-{DEV_MINOR_MAX})")
