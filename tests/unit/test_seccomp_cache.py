"""The cache of libseccomp's BPF programs (shim.init.seccomp_cache) and `seccomp.prepare` using it."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import linux as L
from dockyard_common.shimlaunch import ZYGOTE_DIR
from shim.init import seccomp as S
from shim.init import seccomp_cache as C

PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


def _profile(**changes: Any) -> S.Program:
    return S.compile_profile({**PROFILE, **changes})


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    """A runtime state dir the shim has marked (its .dockyard-shim dir exists)."""
    (tmp_path / ZYGOTE_DIR).mkdir(mode=0o700)
    (tmp_path / "default" / "c1").mkdir(parents=True)
    return tmp_path


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Each test starts with nothing prepared in this process.
    monkeypatch.setattr(S, "_prepared", {})
    yield


def _built(program: S.Program) -> C.Compiled:
    f = S._build(program)
    try:
        return C.Compiled(*f.export())
    finally:
        f.release()


def test_the_key_follows_the_program() -> None:
    a = C.key(_profile())
    assert a == C.key(_profile()) and len(a) == 64
    assert C.key(_profile(defaultAction="SCMP_ACT_LOG")) != a
    assert C.key(_profile(architectures=["SCMP_ARCH_X86_64"])) != a
    errno2 = [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2}]
    assert C.key(_profile(syscalls=errno2)) != a
    cond = [{**errno2[0], "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]}]
    assert C.key(_profile(syscalls=cond)) != C.key(_profile(syscalls=errno2))


def test_libseccomp_exports_the_same_program_each_time() -> None:
    a, b = _built(_profile()), _built(_profile())
    assert a == b and a.flags == 0
    assert len(a.program) % L.SOCK_FILTER_SIZE == 0 and len(a.program) > 0


def test_cache_dir_only_in_a_marked_runtime_dir(tmp_path: Path, runtime: Path) -> None:
    assert C.cache_dir(str(runtime / "default" / "c1")) == str(runtime / ZYGOTE_DIR / C.SUBDIR)
    (tmp_path / "other" / "ns" / "id").mkdir(parents=True)
    assert C.cache_dir(str(tmp_path / "other" / "ns" / "id")) is None
    assert C.cache_dir("/x") is None


def test_round_trip_private_files(runtime: Path) -> None:
    d = str(runtime / ZYGOTE_DIR / C.SUBDIR)
    entry, key = _built(_profile()), C.key(_profile())
    assert C.read(d, key) is None  # no dir yet
    C.write(d, key, entry)
    assert C.read(d, key) == entry
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    path = Path(d) / (key + C.SUFFIX)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in Path(d).iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize("damage", ["flip-program", "flip-header", "truncate", "append", "empty"])
def test_a_corrupt_entry_is_ignored(runtime: Path, damage: str) -> None:
    d = str(runtime / ZYGOTE_DIR / C.SUBDIR)
    entry, key = _built(_profile()), C.key(_profile())
    C.write(d, key, entry)
    path = Path(d) / (key + C.SUFFIX)
    data = bytearray(path.read_bytes())
    if damage == "flip-program":
        data[-3] ^= 0x01
    elif damage == "flip-header":
        data[12] ^= 0x01  # the flags
    elif damage == "truncate":
        data = data[:-8]
    elif damage == "append":
        data += bytes(8)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert C.read(d, key) is None


def test_another_keys_entry_is_ignored(runtime: Path) -> None:
    d = str(runtime / ZYGOTE_DIR / C.SUBDIR)
    a, b = _profile(), _profile(defaultAction="SCMP_ACT_LOG")
    C.write(d, C.key(a), _built(a))
    os.rename(Path(d) / (C.key(a) + C.SUFFIX), Path(d) / (C.key(b) + C.SUFFIX))
    assert C.read(d, C.key(b)) is None


def test_a_dir_others_can_write_or_a_symlinked_entry_is_not_used(runtime: Path, tmp_path: Path) -> None:
    d = runtime / ZYGOTE_DIR / C.SUBDIR
    entry, key = _built(_profile()), C.key(_profile())
    C.write(str(d), key, entry)
    d.chmod(0o777)
    assert C.read(str(d), key) is None
    C.write(str(d), key, entry)  # not written either
    d.chmod(0o700)
    assert C.read(str(d), key) == entry
    (tmp_path / "elsewhere").write_bytes((d / (key + C.SUFFIX)).read_bytes())
    (d / (key + C.SUFFIX)).unlink()
    (d / (key + C.SUFFIX)).symlink_to(tmp_path / "elsewhere")
    assert C.read(str(d), key) is None


def test_entries_are_bounded(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "MAX_ENTRIES", 3)
    d = str(runtime / ZYGOTE_DIR / C.SUBDIR)
    keys = []
    for n in range(5):
        p = _profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": n + 1}])
        keys.append(C.key(p))
        C.write(d, keys[-1], _built(p))
        os.utime(Path(d) / (keys[-1] + C.SUFFIX), ns=(n * 10**9, n * 10**9))  # a distinct age each
    assert sorted(os.listdir(d)) == sorted(k + C.SUFFIX for k in keys[-3:])


def test_an_oversized_program_is_not_cached(runtime: Path) -> None:
    d = str(runtime / ZYGOTE_DIR / C.SUBDIR)
    C.write(d, "00" * 32, C.Compiled(bytes(L.BPF_MAXINSNS * L.SOCK_FILTER_SIZE + 8), 0))
    assert not os.path.exists(d) or os.listdir(d) == []


def test_prepare_builds_then_hits_then_rebuilds_a_corrupt_entry(runtime: Path, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, "dockyard.shim.seccomp")
    bundle = str(runtime / "default" / "c1")
    program = _profile()
    path = runtime / ZYGOTE_DIR / C.SUBDIR / (C.key(program) + C.SUFFIX)

    S.prepare(program, bundle)
    assert "built by libseccomp" in caplog.text and path.exists()
    expected = _built(program)
    assert S._prepared[program] == expected

    for corrupt in (False, True):
        caplog.clear()
        monkeypatch.setattr(S, "_prepared", {})  # a new shim: only the file remains
        if corrupt:
            path.write_bytes(path.read_bytes()[:-1] + b"\xff")
        S.prepare(program, bundle)
        assert S._prepared[program] == expected
        assert ("from the cache" in caplog.text) is not corrupt
        assert ("corrupt or mismatching" in caplog.text) is corrupt
    assert C.read(str(path.parent), C.key(program)) == expected  # rewritten whole

    caplog.clear()
    S.prepare(program, bundle)  # prepared in this process already: no file read
    assert caplog.text == ""


def test_a_cache_that_cannot_be_written_never_fails(runtime: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "dockyard.shim.seccomp")
    (runtime / ZYGOTE_DIR / C.SUBDIR).write_text("not a directory")
    program = _profile()
    S.prepare(program, str(runtime / "default" / "c1"))
    assert S._prepared[program] == _built(program)
    assert "built by libseccomp" in caplog.text


def test_a_program_libseccomp_refuses_is_left_to_the_init(runtime: Path) -> None:
    program = S.Program(0x7FFF0000, ("x86_64",), (S.Rule(0x00050001, ("mkdir",), ((0, 99, 0, 0),)),))  # bad op
    S.prepare(program, str(runtime / "default" / "c1"))
    assert program not in S._prepared
    assert not (runtime / ZYGOTE_DIR / C.SUBDIR).exists()


def test_no_key_is_computed_without_a_cache(tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key hashes the whole program: a container without a cache dir does not pay for it."""
    keyed: list[S.Program] = []
    real_key = C.key

    def counted_key(p: S.Program) -> str:
        keyed.append(p)
        return real_key(p)

    monkeypatch.setattr(C, "key", counted_key)
    (tmp_path / "elsewhere" / "ns" / "id").mkdir(parents=True)
    for action, bundle in (("SCMP_ACT_LOG", None), ("SCMP_ACT_TRAP", str(tmp_path / "elsewhere" / "ns" / "id"))):
        program = _profile(defaultAction=action)
        S.prepare(program, bundle)
        assert S._prepared[program] == _built(program)
    assert keyed == []
    program = _profile()
    S.prepare(program, str(runtime / "default" / "c1"))  # a cache: keyed once, and stored
    assert keyed == [program] and C.read(str(runtime / ZYGOTE_DIR / C.SUBDIR), real_key(program)) is not None


def test_eviction_removes_temp_files_a_crash_left(runtime: Path) -> None:
    d = runtime / ZYGOTE_DIR / C.SUBDIR
    first, second = _profile(), _profile(defaultAction="SCMP_ACT_LOG")
    C.write(str(d), C.key(first), _built(first))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a writer that died before renaming its temp file
    name = C.key(second) + C.SUFFIX
    dead = d / f".{name}.{gone.pid}.tmp"
    old = d / f".{name}.{os.getppid()}.tmp"  # its writer lives, but it is far older than any write
    live = d / f".{'0' * 64}{C.SUFFIX}.{os.getpid()}.tmp"  # another entry's write, in progress
    other = d / f".{name}.notapid.tmp"  # no name `write` makes
    for p in (dead, old, live, other):
        p.write_bytes(b"torn")
    os.utime(old, (time.time() - 2 * C.STALE_TEMP_SECONDS,) * 2)
    foreign = d / ".keep"  # not a temp file: not the cache's to remove
    foreign.write_bytes(b"")
    C.write(str(d), C.key(second), _built(second))
    assert not dead.exists() and not old.exists() and not other.exists()
    assert live.exists() and foreign.exists()
    assert C.read(str(d), C.key(first)) == _built(first) and C.read(str(d), C.key(second)) == _built(second)
