"""Content store: immutable blobs by digest, written through resumable ingests by ref.

The contract is `store.ContentStore`; `local.LocalContentStore` keeps blobs on disk.
"""

from supervisor.content.digest import parse_digest, verify_digest
from supervisor.content.local import LocalBlobReader, LocalContentStore
from supervisor.content.local_writer import LocalWriter
from supervisor.content.store import BlobReader, ContentStore, Info, Status, Writer, read_blob

__all__ = [
    "BlobReader",
    "ContentStore",
    "Info",
    "LocalBlobReader",
    "LocalContentStore",
    "LocalWriter",
    "Status",
    "Writer",
    "parse_digest",
    "read_blob",
    "verify_digest",
]
