"""dock export's descriptor walk (dock/commands/export.py TreeWriter): on a tree that holds still
it writes the bytes tarfile.add wrote (hard links, symlinks, FIFOs, modes, owners); a file that
shrinks while read is padded to its header's size; a symlink is never followed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from dock.commands import export


def _old_write_tree(root: Path, out: io.BytesIO) -> None:
    """The path-based walk export used before (tarfile.add)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name, recursive=True, filter=export._entry)


def test_a_still_tree_gives_the_bytes_tarfile_add_gave(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("hi\n")
    os.link(tmp_path / "a" / "f", tmp_path / "a" / "g")
    os.link(tmp_path / "a" / "f", tmp_path / "z")
    os.symlink("/etc", tmp_path / "a" / "l")
    os.mkfifo(tmp_path / "a" / "p")
    os.chmod(tmp_path / "a" / "f", 0o4755)
    old, new = io.BytesIO(), io.BytesIO()
    _old_write_tree(tmp_path, old)
    export.write_tree(tmp_path, new)
    assert new.getvalue() == old.getvalue()


def test_symlinks_are_entries_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host\n")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    out = io.BytesIO()
    export.write_tree(root, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        assert [(m.name, m.issym(), m.linkname) for m in tf] == [("link", True, str(outside))]


def test_a_file_that_shrank_is_padded_to_its_header_size() -> None:
    reader = export._Exactly(io.BytesIO(b"abc"), 8)
    assert reader.read(5) == b"abc\0\0" and reader.read(10) == b"\0\0\0" and reader.read(1) == b""
    grown = export._Exactly(io.BytesIO(b"abcdef"), 4)
    assert grown.read() == b"abcd"
