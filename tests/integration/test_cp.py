"""dock cp (issue 15): files between containers and the host, through the daemon's Copy service.

A real daemon and our shim; busybox containers. docker cp's rules for files, directories and
`/.`; tars on stdin/stdout; owners with -a; stopped containers (their snapshot mounted by the
daemon); symlinks in the container resolved inside its root; hostile tars kept inside it.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dockyard_common.mountinfo import mountinfo
from tests.compat.runtimes import IMAGE
from tests.daemon import REPO, DaemonProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

SETUP = ("mkdir -p /d/sub && echo hello > /d/f && echo deep > /d/sub/g && ln -s /etc /d/etclink"
         " && ln -s / /d/rootlink && ln -s f /d/flink && echo container-marker > /etc/dy-marker")


@pytest.fixture
def host() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dy-cp-") as tmp:
        yield Path(tmp)


def dock(d: DaemonProcess, *args: str, input: bytes | None = None, timeout: float = 60
         ) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env,
                          timeout=timeout, cwd=REPO, input=input)


def ok(d: DaemonProcess, *args: str, input: bytes | None = None) -> bytes:
    res = dock(d, *args, input=input)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def fails(d: DaemonProcess, *args: str, input: bytes | None = None) -> str:
    res = dock(d, *args, input=input)
    err = res.stderr.decode()
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in err and "unexpected error" not in err, err
    return err


def running(d: DaemonProcess) -> str:
    cid = f"cp-{secrets.token_hex(3)}"
    ok(d, "run", "-d", "--net", "none", "--name", cid, IMAGE, "sleep", "600")
    ok(d, "exec", cid, "sh", "-c", SETUP)
    return cid


def in_container(d: DaemonProcess, cid: str, script: str) -> str:
    return ok(d, "exec", cid, "sh", "-c", script).decode()


def stop(d: DaemonProcess, cid: str) -> None:
    ok(d, "tasks", "kill", "-s", "SIGKILL", cid)
    wait_until(lambda: dock(d, "tasks", "rm", cid).returncode == 0, what=f"task {cid} deleted")


def tar_bytes(*entries: tuple[str, str, bytes | str]) -> bytes:
    """A tar of (name, kind, data-or-link-target) entries, kind in file|dir|symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tf.addfile(info)
            else:
                raw = data.encode() if isinstance(data, str) else data
                info.size, info.mode = len(raw), 0o644
                tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def names_of(tar: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {m.name.rstrip("/") for m in tf.getmembers()}


# -- out of a container ------------------------------------------------------------------------


def test_file_out_to_a_new_name_an_existing_file_and_a_directory(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    ok(d, "cp", f"{cid}:/d/f", str(host / "new"))
    assert (host / "new").read_text() == "hello\n"
    (host / "existing").write_text("old contents that are longer\n")
    ok(d, "cp", f"{cid}:/d/f", str(host / "existing"))
    assert (host / "existing").read_text() == "hello\n"
    (host / "dir").mkdir()
    ok(d, "cp", f"{cid}:/d/f", str(host / "dir"))
    assert (host / "dir" / "f").read_text() == "hello\n"
    # A symlink is copied as one (its target as it is); -L copies what it points to.
    ok(d, "cp", f"{cid}:/d/flink", str(host / "link"))
    assert os.readlink(host / "link") == "f"
    ok(d, "cp", "-L", f"{cid}:/d/flink", str(host / "followed"))
    assert (host / "followed").read_text() == "hello\n" and not (host / "followed").is_symlink()


def test_directory_out_new_existing_and_contents(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    ok(d, "cp", f"{cid}:/d", str(host / "new"))
    assert (host / "new" / "f").read_text() == "hello\n"
    assert (host / "new" / "sub" / "g").read_text() == "deep\n"
    assert os.readlink(host / "new" / "etclink") == "/etc"  # kept as it is, never followed
    (host / "into").mkdir()
    ok(d, "cp", f"{cid}:/d", str(host / "into"))
    assert (host / "into" / "d" / "sub" / "g").read_text() == "deep\n"
    (host / "contents").mkdir()
    ok(d, "cp", f"{cid}:/d/.", str(host / "contents"))
    assert (host / "contents" / "f").read_text() == "hello\n"
    assert not (host / "contents" / "d").exists()
    (host / "afile").write_text("x")
    assert "cannot copy directory" in fails(d, "cp", f"{cid}:/d", str(host / "afile"))
    assert (host / "afile").read_text() == "x"
    assert "does not exist" in fails(d, "cp", f"{cid}:/d/f", str(host / "missing") + "/")


def test_tar_on_stdout(d: DaemonProcess) -> None:
    cid = running(d)
    out = ok(d, "cp", f"{cid}:/d", "-")
    assert {"d", "d/f", "d/sub", "d/sub/g", "d/etclink", "d/rootlink", "d/flink"} <= names_of(out)
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        f = tf.extractfile("d/f")
        assert f is not None and f.read() == b"hello\n"
    contents = names_of(ok(d, "cp", f"{cid}:/d/.", "-"))
    assert "./f" in contents or "f" in {n.removeprefix("./") for n in contents}


def test_errors_are_words(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    assert "no such file or directory" in fails(d, "cp", f"{cid}:/nope", str(host / "x"))
    assert "not a directory" in fails(d, "cp", f"{cid}:/d/f/", str(host / "x"))
    assert "nosuchcontainer" in fails(d, "cp", "nosuchcontainer:/d", str(host / "x"))
    assert "one side must be the host" in fails(d, "cp", f"{cid}:/d", f"{cid}:/e")
    assert not (host / "x").exists()


# -- into a container --------------------------------------------------------------------------


def test_file_and_directory_in(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    (host / "file.txt").write_text("from the host\n")
    src = host / "tree"
    (src / "inner").mkdir(parents=True)
    (src / "a").write_text("A\n")
    (src / "inner" / "b").write_text("B\n")
    ok(d, "cp", str(host / "file.txt"), f"{cid}:/tmp/")             # into a directory
    ok(d, "cp", str(host / "file.txt"), f"{cid}:/tmp/renamed")       # to a new name
    ok(d, "cp", str(host / "file.txt"), f"{cid}:/d/f")               # over a file
    ok(d, "cp", str(src), f"{cid}:/tmp/newdir")                      # a directory, to a new name
    ok(d, "cp", str(src), f"{cid}:/d")                               # into an existing directory
    ok(d, "exec", cid, "mkdir", "/tmp/contents")
    ok(d, "cp", f"{src}/.", f"{cid}:/tmp/contents")                  # its contents
    assert in_container(d, cid, "cat /tmp/file.txt /tmp/renamed /d/f") == "from the host\n" * 3
    assert in_container(d, cid, "cat /tmp/newdir/a /tmp/newdir/inner/b") == "A\nB\n"
    assert in_container(d, cid, "cat /d/tree/a /d/tree/inner/b") == "A\nB\n"
    assert in_container(d, cid, "cat /tmp/contents/a /tmp/contents/inner/b; ls /tmp/contents") == "A\nB\na\ninner\n"
    assert "cannot copy directory" in fails(d, "cp", str(src), f"{cid}:/d/f")
    assert "does not exist" in fails(d, "cp", str(host / "file.txt"), f"{cid}:/nowhere/")


def test_tar_on_stdin(d: DaemonProcess) -> None:
    cid = running(d)
    tar = tar_bytes(("x", "dir", b""), ("x/y", "file", "why\n"), ("z", "file", "zed\n"),
                    (".wh.kept", "file", "a plain file, not a whiteout\n"))
    ok(d, "exec", cid, "mkdir", "/tmp/in")
    ok(d, "exec", cid, "touch", "/tmp/in/kept")
    ok(d, "cp", "-", f"{cid}:/tmp/in", input=tar)
    assert in_container(d, cid, "cat /tmp/in/x/y /tmp/in/z; ls -a /tmp/in") == \
        "why\nzed\n.\n..\n.wh.kept\nkept\nx\nz\n"
    assert "must be a directory" in fails(d, "cp", "-", f"{cid}:/d/f", input=tar)


def test_archive_mode_keeps_owners_else_root(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    f = host / "owned"
    f.write_text("mine\n")
    os.chown(f, 1234, 2345)
    ok(d, "cp", str(f), f"{cid}:/tmp/plain")
    ok(d, "cp", "-a", str(f), f"{cid}:/tmp/kept")
    assert in_container(d, cid, "stat -c %u:%g /tmp/plain /tmp/kept") == "0:0\n1234:2345\n"
    ok(d, "exec", cid, "sh", "-c", "echo theirs > /tmp/theirs && chown 4321:5432 /tmp/theirs")
    ok(d, "cp", "-a", f"{cid}:/tmp/theirs", str(host / "kept-out"))
    ok(d, "cp", f"{cid}:/tmp/theirs", str(host / "plain-out"))
    st_kept, st_plain = os.stat(host / "kept-out"), os.stat(host / "plain-out")
    assert (st_kept.st_uid, st_kept.st_gid) == (4321, 5432)
    assert (st_plain.st_uid, st_plain.st_gid) == (os.getuid(), os.getgid())


# -- stopped containers ------------------------------------------------------------------------


def _our_mounts(d: DaemonProcess) -> list[str]:
    tmp = str(d.root / "tmp")
    return [p for p, _, _ in mountinfo() if p.startswith(tmp)]


def test_stopped_container_through_its_snapshot(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    stop(d, cid)
    ok(d, "cp", f"{cid}:/d/sub/g", str(host / "g"))
    assert (host / "g").read_text() == "deep\n"
    (host / "later").write_text("written while stopped\n")
    ok(d, "cp", str(host / "later"), f"{cid}:/d/")
    ok(d, "cp", f"{cid}:/d/later", str(host / "back"))
    assert (host / "back").read_text() == "written while stopped\n"
    assert _our_mounts(d) == []  # the daemon unmounted the snapshot after each call
    # The file is in the container's filesystem when it runs again.
    ok(d, "tasks", "start", "-d", cid)
    assert in_container(d, cid, "cat /d/later") == "written while stopped\n"


# -- symlinks and hostile archives -------------------------------------------------------------


def test_symlinks_in_the_container_resolve_inside_its_root(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    assert not Path("/etc/dy-marker").exists()
    ok(d, "cp", f"{cid}:/d/etclink/dy-marker", str(host / "m1"))
    ok(d, "cp", f"{cid}:/d/rootlink/etc/dy-marker", str(host / "m2"))
    ok(d, "cp", f"{cid}:/d/rootlink/../../../../etc/passwd", str(host / "passwd"))
    assert (host / "m1").read_text() == (host / "m2").read_text() == "container-marker\n"
    assert (host / "passwd").read_text() == in_container(d, cid, "cat /etc/passwd")
    ok(d, "cp", "-L", f"{cid}:/d/etclink", str(host / "etc"))
    assert (host / "etc" / "dy-marker").read_text() == "container-marker\n"
    # Writing through the container's symlinks lands in the container's /etc, not the host's.
    name = f"dy-cp-{secrets.token_hex(4)}"
    (host / name).write_text("in\n")
    ok(d, "cp", str(host / name), f"{cid}:/d/etclink/")
    ok(d, "cp", str(host / name), f"{cid}:/d/rootlink/etc/{name}.2")
    assert in_container(d, cid, f"cat /etc/{name} /etc/{name}.2") == "in\nin\n"
    assert not Path(f"/etc/{name}").exists() and not Path(f"/etc/{name}.2").exists()


def test_hostile_tars_write_nothing_outside_the_root(d: DaemonProcess) -> None:
    cid = running(d)
    name = f"dy-escape-{secrets.token_hex(4)}"
    ok(d, "exec", cid, "mkdir", "/tmp/t")
    # `..` climbing out of the destination: refused outright.
    err = fails(d, "cp", "-", f"{cid}:/tmp/t", input=tar_bytes((f"../../../../../../{name}", "file", "x")))
    assert "escapes" in err
    # An absolute symlink in the tar used as a parent: followed inside the destination at most.
    ok(d, "cp", "-", f"{cid}:/tmp/t", input=tar_bytes(("evil", "symlink", "/etc"), (f"evil/{name}", "file", "x")))
    # A relative one climbing out: likewise.
    ok(d, "cp", "-", f"{cid}:/tmp/t", input=tar_bytes(
        ("up", "symlink", "../../../../../../../.."), (f"up/{name}.2", "file", "y")))
    # A symlink the container already has, pointing at /etc: the container's /etc at most.
    ok(d, "cp", "-", f"{cid}:/d/etclink", input=tar_bytes((f"{name}.3", "file", "z")))
    assert in_container(d, cid, f"cat /etc/{name}.3") == "z"
    for candidate in (f"/{name}", f"/etc/{name}", f"/{name}.2", f"/etc/{name}.3", str(d.base / name),
                      str(d.root / name)):
        assert not Path(candidate).exists(), candidate
    found = subprocess.run(["find", str(d.base), "-name", f"{name}*", "-not", "-path", "*/proc/*"],
                           capture_output=True, text=True).stdout.split()
    # Whatever was written is inside the container's own filesystem (its snapshot).
    assert all("/snapshots/" in p or p.startswith(str(d.base / "state" / "tasks")) for p in found), found


def test_local_extraction_refuses_an_archive_that_leads_outside(host: Path) -> None:
    """The host side of `dock cp` (dock/localtar.py): the daemon's archives never do this,
    but a broken one must not write through a symlink it brought along."""
    import asyncio

    from dock.localtar import extract
    from dockyard_common.errors import InvalidArgument

    outside = host / "outside"
    outside.mkdir()
    dest = host / "dest"
    dest.mkdir()

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    tar = tar_bytes(("top", "dir", b""), ("top/link", "symlink", str(outside)), ("top/link/pwned", "file", "x"))
    with pytest.raises(InvalidArgument, match="outside"):
        asyncio.run(extract(chunks(tar), dest, None, keep_owner=False))
    assert list(outside.iterdir()) == []
    assert os.readlink(dest / "top" / "link") == str(outside)  # kept as a symlink, never followed


def test_a_running_container_is_seen_with_its_mounts(d: DaemonProcess, host: Path) -> None:
    """Through the init's root: a bind mount is the container's view of it, and the kernel's
    pseudo filesystems (/proc, /sys) are left out of an archive of `/`."""
    vol = host / "vol"
    vol.mkdir()
    (vol / "v").write_text("volume file\n")
    cid = f"cp-{secrets.token_hex(3)}"
    ok(d, "run", "-d", "--net", "none", "-v", f"{vol}:/vol", "--name", cid, IMAGE, "sleep", "600")
    ok(d, "cp", f"{cid}:/vol/v", str(host / "v-out"))
    assert (host / "v-out").read_text() == "volume file\n"
    (host / "w").write_text("into the volume\n")
    ok(d, "cp", str(host / "w"), f"{cid}:/vol/")
    assert (vol / "w").read_text() == "into the volume\n"
    names = names_of(ok(d, "cp", f"{cid}:/", "-"))
    assert {"./proc", "./sys", "./bin/sh", "./etc/passwd", "./vol/v"} <= names
    assert not [n for n in names if n.startswith(("./proc/", "./sys/"))]


def test_a_read_only_container_refuses_writes(d: DaemonProcess, host: Path) -> None:
    cid = f"cp-{secrets.token_hex(3)}"
    ok(d, "run", "-d", "--net", "none", "--read-only", "--name", cid, IMAGE, "sleep", "600")
    (host / "f").write_text("x\n")
    assert "read-only" in fails(d, "cp", str(host / "f"), f"{cid}:/tmp/")
    ok(d, "cp", f"{cid}:/etc/passwd", str(host / "passwd"))  # reading is fine
    assert "root:" in (host / "passwd").read_text()


def test_a_followed_symlink_keeps_the_name_it_was_given(d: DaemonProcess, host: Path) -> None:
    cid = running(d)
    (host / "into").mkdir()
    ok(d, "cp", "-L", f"{cid}:/d/etclink", str(host / "into"))
    assert (host / "into" / "etclink" / "dy-marker").read_text() == "container-marker\n"
    ok(d, "cp", f"{cid}:/d/etclink/", str(host / "into"))  # a trailing slash follows it too
    assert not (host / "into" / "etc").exists()
