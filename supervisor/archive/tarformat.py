"""Facts of the tar format that our reader (tarread) and writer (tarwrite) share: ustar
headers in 512-byte blocks, their type flags, and pax extended records."""

from __future__ import annotations

BLOCK = 512

# Type flags, as one-character strings like tarfile's (the writer encodes them).
REGULAR = "0"
HARDLINK = "1"
SYMLINK = "2"
CHAR = "3"
BLOCKDEV = "4"
DIRECTORY = "5"
FIFO = "6"
PAX = "x"  # pax extended header for the next entry
PAX_GLOBAL = "g"

XATTR_PREFIX = "SCHILY.xattr."  # pax record key prefix for an extended attribute
