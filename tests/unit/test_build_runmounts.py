"""RUN --mount values (supervisor/build/runmounts.py): parsing and the cache directories."""

from __future__ import annotations

import asyncio
import fcntl
import os
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument, Unimplemented
from supervisor.build.runmounts import CacheDirs, RunMount, mount_from_values, parse_mount
from supervisor.timeutil import now


def _parse(text: str, workdir: str = "/") -> RunMount:
    return parse_mount(text, lambda w: w.replace("$T", "/expanded"), workdir)


def test_defaults_aliases_and_expansion() -> None:
    assert _parse("target=/src") == RunMount("bind", "/src", source="/", readonly=True)
    m = _parse("type=cache,dst=rel/dir,mode=0700,uid=1000,gid=1000,sharing=locked")
    assert (m.type, m.target, m.id, m.readonly, m.mode, m.uid, m.sharing) == (
        "cache", "/rel/dir", "/rel/dir", False, 0o700, 1000, "locked")
    assert _parse("type=cache,target=rel", "/work").target == "/work/rel"
    assert _parse("type=cache,target=$T,id=x,ro").readonly and _parse("type=cache,target=$T").target == "/expanded"
    assert _parse('type=bind,"source=a,b",target=/x').source == "a,b"  # CSV quoting
    assert _parse("type=tmpfs,target=/t,size=1m").size == 1 << 20


@pytest.mark.parametrize(("text", "error", "words"), [
    ("type=cache", InvalidArgument, "a target is required"),
    ("type=nope,target=/x", InvalidArgument, "unknown type 'nope'"),
    ("target=/x,colour=red", InvalidArgument, "unexpected key 'colour'"),
    ("type=cache,target=/x,mode=999", InvalidArgument, "mode='999'"),
    ("type=cache,target=/x,uid=-1", InvalidArgument, "uid='-1'"),
    ("type=cache,target=/x,sharing=maybe", InvalidArgument, "sharing 'maybe'"),
    ("type=cache,target=/x,ro=perhaps", InvalidArgument, "want true or false"),
    ("type=secret,id=a", Unimplemented, "type=secret"),
    ("type=ssh", Unimplemented, "type=ssh"),
    ("target=/x,rw", Unimplemented, "rw is not supported"),
    ("type=cache,target=/x,from=stage", Unimplemented, "from or source"),
])
def test_bad_values(text: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        _parse(text)


def test_from_values_for_the_plan() -> None:
    assert mount_from_values(["type=bind,from=build,target=/a", "type=cache,target=/c", '"bad']) == ["build"]


def test_cache_dirs_persist_lock_and_prune(tmp_path: Path) -> None:
    dirs = CacheDirs(tmp_path / "mounts")
    m = _parse("type=cache,target=/c,mode=0750,uid=12,gid=34")

    async def scenario() -> None:
        async with dirs.use("ns", m, tmp_path) as data:
            st = os.stat(data)
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o750, 12, 34)
            (data / "kept").write_text("x" * 5000)
            # in use (a shared lock held): not pruned
            assert dirs.prune("ns", timedelta(), now()) == ([], 0)
            private = _parse("type=cache,target=/c,sharing=private")
            async with dirs.use("ns", private, tmp_path) as fresh:  # shared holder: private gets its own
                assert fresh != data and not list(fresh.iterdir())
            assert not fresh.exists()
        async with dirs.use("ns", m, tmp_path) as again:
            assert (again / "kept").exists()
        assert dirs.prune("ns", timedelta(hours=1), now()) == ([], 0)  # just used
        removed, freed = dirs.prune("ns", timedelta(), now())
        assert len(removed) == 1 and removed[0].startswith("cachemount:") and freed >= 5000
        assert not dirs.path("ns", "/c").exists()

    asyncio.run(scenario())


def test_locked_waits_for_the_holder(tmp_path: Path) -> None:
    dirs = CacheDirs(tmp_path / "mounts")
    m = _parse("type=cache,target=/c,sharing=locked")

    async def scenario() -> None:
        order: list[str] = []
        first_in = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with dirs.use("ns", m, tmp_path):
                order.append("first in")
                first_in.set()
                await release.wait()
                order.append("first out")

        async def waiter() -> None:
            await first_in.wait()
            async with dirs.use("ns", m, tmp_path):
                order.append("second in")

        tasks = [asyncio.ensure_future(holder()), asyncio.ensure_future(waiter())]
        await first_in.wait()
        fd = os.open(dirs.path("ns", "/c") / "lock", os.O_RDWR)
        try:  # the holder's exclusive lock is what the waiter waits on
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        release.set()
        await asyncio.gather(*tasks)
        assert order == ["first in", "first out", "second in"]

    asyncio.run(scenario())
