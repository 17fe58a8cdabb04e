"""`dock build` on the client side: flags, the context sent (.dockerignore applied, owners 0:0),
`-f -`, a context of `-` (a tar, a compressed tar, or just a Dockerfile), and the progress views."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dock.build import BuildEvent, BuildResult, ContextReceived, ContextSent, SyncedContext, directory_context
from dock.commands.build import JsonView, PlainView, one_line, parse_build_args, parse_label_pairs, prepare
from dock.parser import build_parser
from dockyard_common.errors import InvalidArgument


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(["build", *argv]).parse_args(["build", *argv])


async def collect(chunks: AsyncIterator[bytes] | bytes | SyncedContext) -> bytes:
    assert not isinstance(chunks, SyncedContext), "a tar context, not a directory"
    if isinstance(chunks, bytes):
        return chunks
    return b"".join([c async for c in chunks])


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "node_modules" / "dep").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM busybox\nCOPY . /app\n")
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "notes.log").write_text("log\n")
    (root / "src" / "keep.log").write_text("keep\n")
    (root / "node_modules" / "dep" / "index.js").write_text("x\n")
    (root / "secret.env").write_text("TOKEN=1\n")
    (root / ".dockerignore").write_text(
        "# comment\nnode_modules\n**/*.log\n!src/keep.log\nsecret.env\nDockerfile\n.dockerignore\n")
    os.link(root / "src" / "main.py", root / "src" / "main-link.py")
    os.symlink("main.py", root / "src" / "alias.py")
    return root


def test_flags() -> None:
    args = parse("-t", "app:1", "--tag", "app:latest", "-f", "ci/Dockerfile", "--build-arg", "A=1",
                 "--build-arg", "B=x=y", "--target", "runtime", "--no-cache", "--pull", "--platform",
                 "linux/arm64", "--label", "team=core", "--network", "none", "--progress", "json", "ctx")
    assert args.tag == ["app:1", "app:latest"]
    assert args.file == "ci/Dockerfile"
    assert args.build_arg == ["A=1", "B=x=y"]
    assert (args.target, args.no_cache, args.pull, args.platform) == ("runtime", True, True, "linux/arm64")
    assert (args.label, args.network, args.progress, args.context) == (["team=core"], "none", "json", "ctx")
    defaults = parse(".")
    assert (defaults.tag, defaults.file, defaults.network, defaults.progress) == ([], None, "default", "auto")
    assert not defaults.no_cache and not defaults.pull


def test_bad_choices_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--network", "bridge", ".")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_build_args() -> None:
    env = {"FROM_ENV": "e"}
    assert parse_build_args(["A=1", "B=", "C=x=y", "FROM_ENV", "UNSET"], env) == [
        ("A", "1"), ("B", ""), ("C", "x=y"), ("FROM_ENV", "e")]
    for bad in ("=x", "", " A=1"):
        with pytest.raises(InvalidArgument, match="invalid --build-arg"):
            parse_build_args([bad], env)


def test_labels() -> None:
    assert parse_label_pairs(["a=1", "b", "c=x=y"]) == [("a", "1"), ("b", ""), ("c", "x=y")]
    with pytest.raises(InvalidArgument, match="invalid --label"):
        parse_label_pairs(["=1"])


async def test_dockerignore_applied_to_what_is_sent(ctx: Path) -> None:
    sent = members(await collect(directory_context(ctx, ctx / "Dockerfile")))
    # The Dockerfile and .dockerignore it excludes stay out: the Dockerfile travels in the
    # options, and COPY must not copy what the .dockerignore leaves out (docker's rule).
    assert set(sent) == {"src", "src/alias.py", "src/keep.log", "src/main.py", "src/main-link.py"}
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in sent.values())
    assert sent["src/alias.py"].issym() and sent["src/alias.py"].linkname == "main.py"
    assert sent["src/main-link.py"].islnk() or sent["src/main.py"].islnk()
    assert sent["src"].isdir()
    assert sent["src/main.py"].mode & 0o777 == (ctx / "src" / "main.py").stat().st_mode & 0o777


async def test_dockerfile_next_to_its_dockerignore(ctx: Path, tmp_path: Path) -> None:
    other = tmp_path / "build.Dockerfile"
    other.write_text("FROM busybox\n")
    Path(f"{other}.dockerignore").write_text("src\n")
    sent = members(await collect(directory_context(ctx, other)))
    assert not any(n.startswith("src") for n in sent)
    assert "secret.env" in sent and "node_modules/dep/index.js" in sent


async def test_unreadable_file_is_one_clear_error(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(root: Path, paths: object, out: object) -> None:
        raise PermissionError(13, "Permission denied", str(root / "src" / "main.py"))

    monkeypatch.setattr("dock.build.write_context", unreadable)
    with pytest.raises(InvalidArgument, match=r"build context: .*src/main.py: Permission denied"):
        await collect(directory_context(ctx))


async def test_default_dockerfile_and_f_relative_to_cwd(ctx: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile, context = prepare(parse(str(ctx)))
    assert dockerfile == b"FROM busybox\nCOPY . /app\n"
    assert context == SyncedContext(ctx, ctx / "Dockerfile")  # a directory is synced
    assert "src/main.py" in members(await collect(directory_context(context.root, context.dockerfile)))
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.chdir(tmp_path)
    dockerfile, _ = prepare(parse("-f", "ci/Dockerfile", str(ctx)))
    assert dockerfile == b"FROM scratch\n"


def test_missing_dockerfile_and_context(ctx: Path) -> None:
    (ctx / "Dockerfile").unlink()
    with pytest.raises(InvalidArgument, match=r"cannot read the Dockerfile .*Dockerfile"):
        prepare(parse(str(ctx)))
    with pytest.raises(InvalidArgument, match="not a directory"):
        prepare(parse(str(ctx / "nope")))


async def test_dockerfile_from_stdin(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", Stdin(b"FROM busybox\nRUN true\n"))
    dockerfile, context = prepare(parse("-f", "-", str(ctx)))
    assert dockerfile == b"FROM busybox\nRUN true\n"
    assert context == SyncedContext(ctx)


def test_stdin_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", Stdin(b""))
    with pytest.raises(InvalidArgument, match="both"):
        prepare(parse("-f", "-", "-"))


@pytest.mark.parametrize("compress", [False, True])
async def test_tar_context_from_stdin(monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    data = tar_of({"Dockerfile": b"FROM busybox\n", "app/a.txt": b"a", "app/b.tmp": b"b",
                   ".dockerignore": b"*/*.tmp\n", "sub/Dockerfile.dev": b"FROM scratch\n"})
    monkeypatch.setattr("sys.stdin", Stdin(gzip.compress(data) if compress else data))
    dockerfile, context = prepare(parse("-"))
    assert dockerfile == b"FROM busybox\n"
    assert set(members(await collect(context))) == {"Dockerfile", "app/a.txt", ".dockerignore",
                                                   "sub/Dockerfile.dev"}
    monkeypatch.setattr("sys.stdin", Stdin(data))
    dockerfile, context = prepare(parse("-f", "sub/Dockerfile.dev", "-"))
    assert dockerfile == b"FROM scratch\n"
    assert "sub/Dockerfile.dev" in members(await collect(context))


def test_tar_context_without_its_dockerfile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", Stdin(tar_of({"a.txt": b"a"})))
    with pytest.raises(InvalidArgument, match="no Dockerfile 'Dockerfile'"):
        prepare(parse("-"))


def test_a_huge_dockerfile_in_a_tar_context_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its size is in the tar header: refused before its bytes are read into memory."""
    monkeypatch.setattr("sys.stdin", Stdin(tar_of({"Dockerfile": b"#" * ((8 << 20) + 1)})))
    with pytest.raises(InvalidArgument, match="'Dockerfile' is larger than 8 MiB"):
        prepare(parse("-"))


async def test_plain_dockerfile_on_stdin_is_an_empty_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", Stdin(b"FROM busybox\nCMD [\"true\"]\n"))
    dockerfile, context = prepare(parse("-"))
    assert dockerfile == b"FROM busybox\nCMD [\"true\"]\n"
    assert await collect(context) == b""


def test_plain_view() -> None:
    out = io.StringIO()
    view = PlainView(out)
    for event in (ContextSent(10), ContextReceived(2048, 3), BuildEvent("step", 1, 2, "", "FROM busybox"),
                  BuildEvent("cached", 1, 2), BuildEvent("step", 2, 2, "app", "RUN echo hi"),
                  BuildEvent("output", 2, 2, data=b"hi\n", stream="stdout"), BuildEvent("done", 2, 2, text="abc"),
                  BuildResult("sha256:m", "sha256:c", ["docker.io/library/app:1"])):
        view.show(event)
    assert out.getvalue().splitlines() == [
        "build context: 2.0 KiB, 3 entries", "Step 1/2 : FROM busybox", " ---> Using cache",
        "Step 2/2 [app] : RUN echo hi", "hi", " ---> abc", "Successfully built sha256:m",
        "Successfully tagged docker.io/library/app:1"]


def test_json_view() -> None:
    out = io.StringIO()
    view = JsonView(out)
    for event in (ContextSent(10), ContextReceived(5, 1), BuildEvent("output", 1, 1, data=b"\xffok", stream="stderr"),
                  BuildResult("sha256:m", "sha256:c", ["t"])):
        view.show(event)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"type": "context", "bytes": 5, "entries": 1, "reused": 0},
                     {"type": "output", "step": 1, "total": 1, "stream": "stderr", "data": "\ufffdok"},
                     {"type": "result", "manifest_digest": "sha256:m", "config_digest": "sha256:c", "tags": ["t"]}]


def test_one_line_errors() -> None:
    assert one_line("step 2 exited with code 3; last output:\nfirst\n\n  second  \n") == (
        "step 2 exited with code 3; last output: first | second")
    assert one_line("plain") == "plain"
    assert one_line("") == ""
