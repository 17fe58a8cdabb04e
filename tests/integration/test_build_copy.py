"""COPY and ADD into real directory trees, as root (supervisor/build/copy.py).

Each test builds a context and a stage rootfs (with /etc/passwd and /etc/group) in a temp dir
and checks what lands where: owners, modes, mtimes, links, extraction, downloads, and that no
source outside the context is read and nothing outside the rootfs is written.
"""

from __future__ import annotations

import bz2
import gzip
import http.server
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument, NotFound, Unavailable
from supervisor.build.cachekey import hash_sources, step_key
from supervisor.build.copy import (
    Owner,
    add_into,
    copy_into,
    http_fetch,
    inline_sources,
    is_tar_archive,
    make_workdir,
    parse_chmod,
    parse_chown,
    resolve_sources,
    resolve_user,
)

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")]

MTIME = 1_600_000_000


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "context"
    (c / "dir" / "sub").mkdir(parents=True)
    (c / "a.txt").write_text("A")
    (c / "b.txt").write_text("B")
    (c / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(c / "run.sh", 0o751)
    (c / "dir" / "f").write_text("F")
    (c / "dir" / "sub" / "g").write_text("G")
    os.symlink("f", c / "dir" / "link")
    os.link(c / "dir" / "f", c / "dir" / "hard")
    os.symlink("a.txt", c / "alias")
    for p in (c / "a.txt", c / "dir" / "f"):
        os.utime(p, (MTIME, MTIME))
    os.chown(c / "a.txt", 1234, 1234)  # the client's owner: means nothing in the image
    return c


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\napp:x:1001:\n")
    return r


def _copy(root: Path, ctx: Path, specs: list[str], dest: str, **kw: object) -> None:
    copy_into(root, dest, resolve_sources(ctx, specs, confined=True), **kw)  # type: ignore[arg-type]


def test_file_into_directory_and_onto_a_name(ctx: Path, root: Path) -> None:
    _copy(root, ctx, ["a.txt"], "/app/")
    _copy(root, ctx, ["run.sh"], "/bin/renamed")
    _copy(root, ctx, ["b.txt"], "rel/", workdir="/work")
    st = os.stat(root / "app" / "a.txt")
    assert (root / "app" / "a.txt").read_text() == "A"
    assert (st.st_uid, st.st_gid, st.st_mtime) == (0, 0, MTIME)  # context owners reset, mtime kept
    assert stat.S_IMODE(os.stat(root / "bin" / "renamed").st_mode) == 0o751
    assert (root / "work" / "rel" / "b.txt").read_text() == "B"
    assert stat.S_IMODE(os.stat(root / "app").st_mode) == 0o755


def test_existing_directory_without_slash(ctx: Path, root: Path) -> None:
    (root / "opt").mkdir()
    _copy(root, ctx, ["a.txt"], "/opt")
    assert (root / "opt" / "a.txt").read_text() == "A"


def test_directory_contents_not_the_directory(ctx: Path, root: Path) -> None:
    _copy(root, ctx, ["dir"], "/dst")
    assert sorted(os.listdir(root / "dst")) == ["f", "hard", "link", "sub"]
    assert os.readlink(root / "dst" / "link") == "f"
    assert (root / "dst" / "sub" / "g").read_text() == "G"
    assert os.stat(root / "dst" / "f").st_ino == os.stat(root / "dst" / "hard").st_ino  # hard link kept


def test_top_level_symlink_is_followed(ctx: Path, root: Path) -> None:
    _copy(root, ctx, ["alias"], "/x/")
    p = root / "x" / "alias"
    assert not p.is_symlink() and p.read_text() == "A"


def test_wildcards(ctx: Path, root: Path) -> None:
    _copy(root, ctx, ["*.txt"], "/w/")
    assert sorted(os.listdir(root / "w")) == ["a.txt", "b.txt"]
    _copy(root, ctx, ["d?r/s*"], "/w2/")  # a matched directory: its contents
    assert os.listdir(root / "w2") == ["g"]
    with pytest.raises(InvalidArgument, match="must be a directory and end with a /"):
        _copy(root, ctx, ["*.txt"], "/nodir")
    with pytest.raises(NotFound, match="no source files were found"):
        _copy(root, ctx, ["*.nothing"], "/w/")
    with pytest.raises(NotFound, match="no such file"):
        _copy(root, ctx, ["missing"], "/w/")


def test_chown_names_ids_and_created_parents(ctx: Path, root: Path) -> None:
    assert parse_chown("app:staff", root) == Owner(1000, 50)
    assert parse_chown("app", root) == Owner(1000, 1000)  # docker: no group -> the uid
    assert parse_chown("7:8", root) == Owner(7, 8)
    with pytest.raises(NotFound, match="no user 'nobody'"):
        parse_chown("nobody", root)
    with pytest.raises(NotFound, match="no group 'wheel'"):
        parse_chown("app:wheel", root)
    _copy(root, ctx, ["dir"], "/home/app/d/", owner=parse_chown("app:app", root))
    for p in ("home/app/d", "home/app/d/f", "home/app/d/sub/g", "home", "home/app"):
        st = os.lstat(root / p)
        assert (st.st_uid, st.st_gid) == (1000, 1001), p
    assert os.lstat(root / "home/app/d/link").st_uid == 1000  # the symlink itself


def test_chmod(ctx: Path, root: Path) -> None:
    _copy(root, ctx, ["dir"], "/m/", mode=parse_chmod("0640"))
    assert stat.S_IMODE(os.stat(root / "m" / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(root / "m" / "sub").st_mode) == 0o640
    for bad in ("u+x", "999", "", "17777"):
        with pytest.raises(InvalidArgument, match="invalid chmod"):
            parse_chmod(bad)


def test_sources_leaving_the_context_are_refused(ctx: Path, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not copy")
    os.symlink(str(secret), ctx / "abs-out")
    os.symlink("../secret", ctx / "rel-out")
    os.symlink("../../secret", ctx / "dir" / "deep-out")
    for spec in ("../secret", "abs-out", "rel-out", "dir/../../secret"):
        with pytest.raises(InvalidArgument, match="build context"):
            _copy(root, ctx, [spec], "/x/")
    # Inside a copied directory a symlink is copied as a link, never read through.
    _copy(root, ctx, ["dir"], "/y/")
    assert os.readlink(root / "y" / "deep-out") == "../../secret"
    assert not (root / "x").exists() or os.listdir(root / "x") == []


def test_writes_never_leave_the_root(ctx: Path, root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("host")
    os.symlink(str(victim), root / "abs")  # absolute: means <root>/<victim path> inside the root
    os.symlink("../../../../../../../../" + str(victim).lstrip("/"), root / "rel")
    os.symlink(str(victim / "file"), root / "etc" / "linked")
    _copy(root, ctx, ["a.txt"], "/abs/")
    _copy(root, ctx, ["b.txt"], "/rel/")
    _copy(root, ctx, ["a.txt"], "/etc/linked")  # the symlink is replaced, not written through
    assert sorted(os.listdir(victim)) == ["file"] and (victim / "file").read_text() == "host"
    inside = root / str(victim).lstrip("/")
    assert sorted(os.listdir(inside)) == ["a.txt", "b.txt"]
    assert not (root / "etc" / "linked").is_symlink() and (root / "etc" / "linked").read_text() == "A"


def test_copy_from_a_stage_keeps_owners_and_resolves_in_its_root(root: Path, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "usr" / "lib").mkdir(parents=True)
    (stage / "usr" / "lib" / "lib.so").write_text("so")
    os.chown(stage / "usr" / "lib" / "lib.so", 33, 44)
    os.symlink("/usr/lib", stage / "lib")  # absolute: inside the stage's root
    sources = resolve_sources(stage, ["/lib/lib.so"], confined=False)
    copy_into(root, "/out/", sources, preserve_owner=True)
    st = os.stat(root / "out" / "lib.so")
    assert (st.st_uid, st.st_gid) == (33, 44)


def test_file_over_directory_is_an_error(ctx: Path, root: Path) -> None:
    (root / "t" / "a.txt").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match="cannot overwrite the directory"):
        _copy(root, ctx, ["a.txt"], "/t/")


def test_heredoc_files(root: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "inline"
    scratch.mkdir()
    sources = inline_sources([("EOF", "hello\n"), ("TWO", "second\n")], scratch)
    copy_into(root, "/etc/conf.d/", sources, owner=Owner(3, 4))
    p = root / "etc" / "conf.d" / "EOF"
    st = os.stat(p)
    assert p.read_text() == "hello\n" and (root / "etc" / "conf.d" / "TWO").read_text() == "second\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o644, 3, 4, 0)
    assert hash_sources(sources) == hash_sources(inline_sources([("EOF", "hello\n"), ("TWO", "second\n")],
                                                                 tmp_path))  # stable across builds


def test_workdir_is_made_with_the_user_as_owner(root: Path, tmp_path: Path) -> None:
    assert resolve_user("app", root) == Owner(1000, 1001)  # the primary group from passwd
    assert resolve_user("1000", root) == Owner(1000, 1001)
    assert resolve_user("4242", root) == Owner(4242, 0)  # no entry: group 0
    assert resolve_user("app:staff", root) == Owner(1000, 50)
    with pytest.raises(NotFound, match="no user 'ghost'"):
        resolve_user("ghost", root)
    (root / "srv").mkdir()
    make_workdir(root, "/srv/app/data", resolve_user("app", root))
    assert os.stat(root / "srv").st_uid == 0  # existing directories keep their owner
    for p in ("srv/app", "srv/app/data"):
        st = os.stat(root / p)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o755)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(victim), root / "out")
    make_workdir(root, "/out/w")
    assert os.listdir(victim) == [] and (root / str(victim).lstrip("/") / "w").is_dir()
    (root / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="not a directory"):
        make_workdir(root, "/file/sub")


# -- ADD ----------------------------------------------------------------------------------------


def _tar(entries: dict[str, bytes], *, owner: int = 0, evil: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, owner, owner, MTIME
            tf.addfile(info, io.BytesIO(data))
        if evil:
            info = tarfile.TarInfo("../../escaped")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


@pytest.mark.parametrize("compress", ["none", "gzip", "bzip2", "xz"])
def test_add_extracts_local_archives(ctx: Path, root: Path, compress: str) -> None:
    raw = _tar({"pkg/x": b"X", "pkg/y": b"YY"}, owner=7)
    data = {"none": raw, "gzip": gzip.compress(raw), "bzip2": bz2.compress(raw), "xz": lzma.compress(raw)}[compress]
    (ctx / "site.tar.any").write_bytes(data)
    assert is_tar_archive(ctx / "site.tar.any")
    add_into(root, "/srv", ["site.tar.any"], ctx)
    assert (root / "srv" / "pkg" / "x").read_text() == "X"
    st = os.stat(root / "srv" / "pkg" / "y")
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_mtime) == (7, 0o640, MTIME)


def test_add_of_non_archives_copies(ctx: Path, root: Path) -> None:
    (ctx / "notes.gz").write_bytes(gzip.compress(b"just text, not a tar"))
    assert not is_tar_archive(ctx / "notes.gz")
    add_into(root, "/d/", ["notes.gz", "a.txt"], ctx)
    assert gzip.decompress((root / "d" / "notes.gz").read_bytes()) == b"just text, not a tar"
    assert (root / "d" / "a.txt").read_text() == "A"


def test_add_hostile_archive_stays_inside(ctx: Path, root: Path, tmp_path: Path) -> None:
    (ctx / "evil.tar").write_bytes(_tar({"ok": b"1"}, evil=True))
    with pytest.raises(InvalidArgument):
        add_into(root, "/e/", ["evil.tar"], ctx)
    assert not (tmp_path / "escaped").exists() and not (root / "escaped").exists()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/files/tool.bin":
            self.send_error(404)
            return
        body = b"downloaded"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_add_url(ctx: Path, root: Path, server: str) -> None:
    url = f"{server}/files/tool.bin"
    add_into(root, "/opt/", [url], ctx, fetch=http_fetch)
    p = root / "opt" / "tool.bin"
    st = os.stat(p)
    assert p.read_bytes() == b"downloaded"
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == 1445412480 and st.st_uid == 0
    add_into(root, "/opt/named", [url], ctx, fetch=http_fetch, owner=Owner(5, 6),
             checksum="sha256:" + __import__("hashlib").sha256(b"downloaded").hexdigest())
    assert os.stat(root / "opt" / "named").st_uid == 5
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        add_into(root, "/opt/bad", [url], ctx, fetch=http_fetch, checksum="sha256:" + "0" * 64)
    with pytest.raises(Unavailable, match="404"):
        add_into(root, "/opt/", [f"{server}/missing"], ctx, fetch=http_fetch)
    assert not (root / "opt" / "bad").exists()


def test_source_hash_follows_content_mode_and_mtime(ctx: Path) -> None:
    def key() -> str:
        return hash_sources(resolve_sources(ctx, ["dir", "a.txt"], confined=True), owners=False)

    first = key()
    assert key() == first
    os.chown(ctx / "dir" / "f", 99, 99)
    assert key() == first  # context owners do not reach the image
    (ctx / "dir" / "sub" / "g").write_text("changed")
    changed = key()
    assert changed != first
    os.chmod(ctx / "a.txt", 0o600)
    assert key() != changed
    moved = key()
    os.utime(ctx / "dir" / "f", (MTIME + 1, MTIME + 1))
    assert key() != moved
    k1 = step_key(parent="sha256:p", instruction="COPY dir /x", sources=first)
    assert k1 == step_key(parent="sha256:p", instruction="COPY dir /x", sources=first)
    assert k1 != step_key(parent="sha256:q", instruction="COPY dir /x", sources=first)
    assert k1 != step_key(parent="sha256:p", instruction="COPY dir /y", sources=first)
