"""COPY and ADD into a stage's root filesystem (a host directory that plays `/`).

    sources = resolve_sources(context_dir, ["src/*.py", "README"], confined=True)
    copy_into(rootfs, "/app/", sources, workdir="/", owner=parse_chown("app:app", rootfs), mode=None)
    add_into(rootfs, "/x/", ["site.tar.gz", "https://h/f"], context_dir, workdir="/", fetch=http_fetch)

Sources (`resolve_sources`):
- names are relative to the source root (the build context, or a stage's/image's rootfs for
  `COPY --from`); wildcards `*?[\\` expand per path component with Go's filepath.Match (as
  buildkit does), sorted by name; a pattern matching nothing is an error (buildah's rule;
  buildkit lets it pass).
- `confined=True` (the build context): a `..` or a symlink (absolute, or relative climbing
  out) that leaves the context is InvalidArgument; a missing source is NotFound.
  `confined=False` (a rootfs): symlinks resolve as inside that root (chroot semantics).
- A source that is a symlink is followed; symlinks inside a copied directory are copied as
  symlinks.

Destination (`copy_into`):
- relative to WORKDIR; it is a directory when it ends in `/`, already is a directory (symlinks
  followed inside the root), or there are several sources (then it must end in `/`, as docker
  requires for several source arguments). A file source lands at `dest/<name>` or at `dest`;
  a directory source has its *contents* copied into `dest` (the directory itself is not).
- Missing parents are created 0755, owned by `--chown`'s ids when given (root otherwise).
- Owner: `--chown` ids; else the source's ids when `preserve_owner` (COPY --from); else 0:0
  (the context's owners mean nothing in the image). Mode: `--chmod` for files and
  directories; else the source's. Modification times are kept; hard links inside one copy
  stay hard links; xattrs are not copied.
- Every write goes through `dockyard_common.rootpath.RootDir` and `*at` calls on a descriptor
  of the parent: nothing outside the root is created or changed, whatever symlinks the root
  holds.

ADD (`add_into`) adds: a local tar (uncompressed, gzip, bzip2, xz or zstd, recognised by its
content) is extracted into the destination directory by the layer applier (its owners and
modes kept); a `http(s)://` URL is downloaded through `fetch` (the caller's: tests serve from
127.0.0.1) to `dest/<last URL path component>` or `dest`, mode 0600, mtime from
Last-Modified; `--checksum=sha256:<hex>` is verified. Everything else is a COPY.

Also the other file effects of a stage: `make_workdir` (WORKDIR's directory, owned by the
USER that `resolve_user` reads from the stage's /etc/passwd and /etc/group) and
`inline_sources` (heredoc sources as files).
"""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dockyard_common import rootfiles
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound, Unavailable, Unimplemented, error_text
from dockyard_common.gomatch import has_magic, match
from dockyard_common.rootpath import MAX_SYMLINKS, NotADirectory, RootDir, clean_name
from supervisor.archive.apply import apply_layer
from supervisor.archive.compression import open_layer
from supervisor.treecopy import copy_bytes, set_attributes

_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR_RD = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


@dataclass(frozen=True)
class Source:
    """A resolved source: its host path (symlinks followed), the name it lands under in a
    destination directory, and what it is."""

    path: Path
    name: str
    is_dir: bool
    spec: str  # as written, for messages


@dataclass(frozen=True)
class Fetched:
    path: Path  # a file the caller may move or delete
    last_modified: float | None
    filename: str  # the name to use under a directory destination


# (url, directory to download into) -> what was fetched
Fetch = Callable[[str, Path], Fetched]


# -- sources ----------------------------------------------------------------------------------


def resolve_sources(root: Path, specs: Sequence[str], *, confined: bool, what: str = "COPY") -> list[Source]:
    """Every source the specs name, in order (wildcards expanded); see the module docstring."""
    out: list[Source] = []
    where = "the build context" if confined else "the source image"
    for spec in specs:
        parts = _lexical(spec, confined=confined, what=what)
        magic = any(has_magic(p) for p in parts)
        candidates = _expand_wildcards(root, parts, confined, what) if magic else [parts]
        if not candidates:
            raise NotFound(f"{what} {spec!r}: no source files were found in {where} matching it")
        for cand in candidates:
            canonical = _resolve(root, cand, confined=confined, spec=spec, what=what)
            path = root.joinpath(*canonical)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise NotFound(f"{what} {spec!r}: no such file or directory in {where}") from None
            name = cand[-1] if cand else ""
            out.append(Source(path, name, stat.S_ISDIR(st.st_mode), spec))
    return out


def _lexical(spec: str, *, confined: bool, what: str) -> tuple[str, ...]:
    parts: list[str] = []
    for comp in spec.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                if confined:
                    raise InvalidArgument(f"{what} {spec!r}: the source leaves the build context")
                continue
            parts.pop()
            continue
        parts.append(comp)
    return tuple(parts)


def _expand_wildcards(root: Path, parts: tuple[str, ...], confined: bool, what: str) -> list[tuple[str, ...]]:
    results: list[tuple[str, ...]] = [()]
    for comp in parts:
        nxt: list[tuple[str, ...]] = []
        for prefix in results:
            if not has_magic(comp):
                nxt.append((*prefix, comp))
                continue
            try:
                canonical = _resolve(root, prefix, confined=confined, spec="/".join(prefix), what=what)
                names = sorted(os.listdir(root.joinpath(*canonical)))
            except (NotFound, NotADirectoryError, FileNotFoundError):
                continue
            nxt += [(*prefix, n) for n in names if match(comp, n)]
        results = nxt
    return results


def _resolve(root: Path, parts: Sequence[str], *, confined: bool, spec: str, what: str) -> tuple[str, ...]:
    """The real components of `parts` under `root`, every symlink expanded (the last one too)."""
    stack: list[str] = []
    pending = list(reversed(parts))
    expansions = 0
    while pending:
        comp = pending.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if stack:
                stack.pop()
            elif confined:
                raise InvalidArgument(f"{what} {spec!r}: a symlink in it leads out of the build context")
            continue
        path = root.joinpath(*stack, comp)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            where = "the build context" if confined else "the source image"
            raise NotFound(f"{what} {spec!r}: no such file or directory in {where}") from None
        except NotADirectoryError:
            raise NotFound(f"{what} {spec!r}: /{'/'.join(stack)} is not a directory") from None
        if not stat.S_ISLNK(st.st_mode):
            if pending and not stat.S_ISDIR(st.st_mode):
                raise NotFound(f"{what} {spec!r}: /{'/'.join((*stack, comp))} is not a directory")
            stack.append(comp)
            continue
        expansions += 1
        if expansions > MAX_SYMLINKS:
            raise InvalidArgument(f"{what} {spec!r}: too many levels of symbolic links")
        target = os.readlink(path)
        if target.startswith("/"):
            if confined:
                raise InvalidArgument(f"{what} {spec!r}: the symlink {'/'.join((*stack, comp))} -> {target} "
                                      "leads out of the build context")
            stack = []
        pending.extend(reversed(target.split("/")))
    return tuple(stack)


def inline_sources(files: Sequence[tuple[str, str]], into: Path) -> list[Source]:
    """Heredoc sources (`COPY <<EOF /dest`) written as files under `into` (a temp dir the
    caller owns): mode 0644, mtime 0 so the cache key depends on the text alone."""
    out: list[Source] = []
    for index, (name, content) in enumerate(files):
        directory = into / f"inline-{index}"
        directory.mkdir()
        path = directory / name
        path.write_text(content, encoding="utf-8")
        os.chmod(path, 0o644)
        os.utime(path, (0, 0))
        out.append(Source(path, name, False, f"<<{name}"))
    return out


# -- ownership and modes ------------------------------------------------------------------------


def parse_chmod(spec: str) -> int:
    """`--chmod` in octal (`755`, `0644`)."""
    if not spec or any(c not in "01234567" for c in spec) or int(spec, 8) > 0o7777:
        raise InvalidArgument(f"invalid chmod parameter {spec!r}: expected an octal mode such as 755")
    return int(spec, 8)


def parse_chown(spec: str, root: Path) -> Owner:
    """`--chown=user[:group]`: ids, or names from the root's /etc/passwd and /etc/group. A user
    without a group uses the user's id as the group id (docker's documented rule)."""
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise InvalidArgument(f"--chown={spec}: expected user[:group]")
    uid = _lookup_id(user, root, "passwd", spec)
    gid = _lookup_id(group, root, "group", spec) if sep else uid
    return Owner(uid, gid)


def _lookup_id(name: str, root: Path, table: str, spec: str) -> int:
    if name.isdigit():
        value = int(name)
        if value > (1 << 32) - 2:
            raise InvalidArgument(f"--chown={spec}: id {name} is out of range")
        return value
    text = read_in_root(root, ("etc", table))
    if text is None:
        raise NotFound(f"--chown={spec}: the image has no /etc/{table} to look {name!r} up in")
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    kind = "user" if table == "passwd" else "group"
    raise NotFound(f"--chown={spec}: no {kind} {name!r} in the image's /etc/{table}")


def resolve_user(spec: str, root: Path) -> Owner:
    """USER's `user[:group]` as a process would run: a name from /etc/passwd brings its primary
    group; a numeric uid its passwd group when it has an entry, else 0 (as runc does)."""
    user, sep, group = spec.partition(":")
    if not user:
        raise InvalidArgument(f"USER {spec!r}: no user")
    entry = _passwd_entry(user, root)
    if user.isdigit():
        uid = int(user)
    elif entry is None:
        raise NotFound(f"USER {spec!r}: no user {user!r} in the image's /etc/passwd")
    else:
        uid = entry[0]
    gid = _lookup_id(group, root, "group", spec) if sep else (entry[1] if entry is not None else 0)
    return Owner(uid, gid)


def additional_gids(owner: Owner, root: Path, name: str = "") -> list[int]:
    """A process' supplementary groups: its primary group and the /etc/group groups that list
    its name (`name`, else its uid's first passwd name) as a member, as containerd's
    WithAdditionalGIDs (and buildah) set them."""
    names = [name] if name else [
        f[0] for f in (line.split(":") for line in (read_in_root(root, ("etc", "passwd")) or "").splitlines())
        if len(f) >= 3 and f[2] == str(owner.uid)][:1]
    gids = {owner.gid}
    for line in (read_in_root(root, ("etc", "group")) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and names and names[0] in fields[3].split(","):
            gids.add(int(fields[2]))
    return sorted(gids)


def _passwd_entry(user: str, root: Path) -> tuple[int, int] | None:
    for line in (read_in_root(root, ("etc", "passwd")) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit() and user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3])
    return None


def make_workdir(root: Path, path: str, owner: Owner | None = None) -> None:
    """WORKDIR's directory: made with its missing parents (0755, owned by `owner`, the stage's
    USER, as buildkit makes it); an existing one is left as it is."""
    with RootDir(root) as rd:
        def chown(parent_fd: int, name: str, _canonical: tuple[str, ...]) -> None:
            if owner is not None:
                os.chown(name, owner.uid, owner.gid, dir_fd=parent_fd, follow_symlinks=False)

        try:
            resolved = rd.resolve_dir(clean_name(path, what="WORKDIR"), create=True, on_create=chown)
        except NotADirectory as e:
            raise InvalidArgument(f"WORKDIR {path}: /{'/'.join(e.canonical)} is not a directory") from None
        if resolved is not None:
            os.close(resolved.fd)


def has_workdir(root: Path, path: str) -> bool:
    """Whether `make_workdir` would find `path` already there (a directory, through symlinks
    resolved inside the root); anything else (missing, not a directory, unresolvable) is False:
    `make_workdir` then makes it or says what is wrong."""
    with RootDir(root) as rd:
        try:
            resolved = rd.resolve_dir(clean_name(path, what="WORKDIR"))
        except (DockyardError, NotADirectory, OSError):
            return False
        if resolved is None:
            return False
        os.close(resolved.fd)
        return True


def read_in_root(root: Path, parts: Sequence[str], limit: int = rootfiles.MAX_TEXT) -> str | None:
    """A text file of the root (symlinks followed inside it); None when missing. The base image
    chooses what it is: a FIFO, a device or a huge file is InvalidArgument, never a hang."""
    return rootfiles.read_in_root(root, "/" + "/".join(parts), limit=limit, what="the image's")


# -- destination --------------------------------------------------------------------------------


def destination(dest: str, workdir: str) -> str:
    """The absolute, cleaned destination (relative ones are under WORKDIR); a trailing `/`
    (or a final `.`) is kept as a trailing `/`: it says "a directory"."""
    if not dest:
        raise InvalidArgument("COPY: the destination must not be empty")
    absolute = posixpath.normpath(posixpath.join("/", workdir or "/", dest))
    is_dir = dest.endswith(("/", "/.")) or dest == "."
    return absolute.rstrip("/") + "/" if is_dir else absolute


def copy_into(root: Path, dest: str, sources: Sequence[Source], *, workdir: str = "/",
              owner: Owner | None = None, mode: int | None = None, preserve_owner: bool = False,
              what: str = "COPY") -> None:
    """Copy `sources` to `dest` inside `root`; see the module docstring."""
    target = destination(dest, workdir)
    many = len(sources) > 1
    with RootDir(root) as rd, _Writer(rd, owner, mode, preserve_owner, what) as w:
        parts = clean_name(target, what=f"{what} destination")
        as_dir = target.endswith("/") or w.is_dir(parts)
        if many and not as_dir:
            raise InvalidArgument(f"{what}: when copying more than one source, the destination must be a "
                                  f"directory and end with a /")
        for src in sources:
            if src.is_dir:
                w.copy_dir_contents(src.path, parts)
            elif as_dir:
                w.copy_file(src.path, parts, src.name)
            else:
                if not parts:
                    raise InvalidArgument(f"{what}: cannot copy a file over /")
                w.copy_file(src.path, parts[:-1], parts[-1])


def add_into(root: Path, dest: str, specs: Sequence[str], context: Path, *, workdir: str = "/",
             owner: Owner | None = None, mode: int | None = None, fetch: Fetch | None = None,
             checksum: str | None = None) -> None:
    """ADD: URLs downloaded, local archives extracted, the rest copied; see the module docstring."""
    target = destination(dest, workdir)
    urls = [s for s in specs if _is_url(s)]
    if checksum is not None and (len(specs) != 1 or not urls):
        raise InvalidArgument("ADD --checksum needs exactly one source, a URL")
    local = resolve_sources(context, [s for s in specs if not _is_url(s)], confined=True, what="ADD")
    many = len(urls) + len(local) > 1
    with RootDir(root) as rd:
        parts = clean_name(target, what="ADD destination")
        with _Writer(rd, owner, mode, False, "ADD") as w:
            as_dir = target.endswith("/") or w.is_dir(parts)
        if many and not as_dir:
            raise InvalidArgument("ADD: when adding more than one source, the destination must be a directory "
                                  "and end with a /")
    with tempfile.TemporaryDirectory(prefix="dockyard-add-") as tmp:
        for url in urls:
            if url.startswith("git@") or url.endswith(".git"):
                raise Unimplemented(f"ADD {url}: git sources are not supported")
            if fetch is None:
                raise InvalidArgument(f"ADD {url}: no downloader for URLs here")
            got = fetch(url, Path(tmp))
            if checksum is not None:
                _verify_checksum(got.path, checksum, url)
            os.chmod(got.path, mode if mode is not None else 0o600)
            mtime = got.last_modified if got.last_modified is not None else os.stat(got.path).st_mtime
            os.utime(got.path, (mtime, mtime))
            if not got.filename and as_dir:
                raise InvalidArgument(f"ADD {url}: cannot determine a file name from the URL")
            src = Source(got.path, got.filename, False, url)
            copy_into(root, target, [src], owner=owner, mode=mode, what="ADD")
        for src in local:
            if not src.is_dir and _extract_if_archive(src.path, root, parts):
                continue
            copy_into(root, target if not many else target.rstrip("/") + "/", [src], owner=owner, mode=mode,
                      what="ADD")


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://", "git@"))


def _verify_checksum(path: Path, checksum: str, url: str) -> None:
    algo, _, want = checksum.partition(":")
    if algo != "sha256" or len(want) != 64:
        raise InvalidArgument(f"ADD --checksum={checksum}: expected sha256:<64 hex digits>")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    if h.hexdigest() != want.lower():
        raise InvalidArgument(f"ADD {url}: checksum mismatch: got sha256:{h.hexdigest()}, expected {checksum}")


# -- archives -----------------------------------------------------------------------------------


@contextmanager
def _decompressed(path: Path) -> Iterator[BinaryIO]:
    with open(path, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        if head.startswith(b"BZh"):
            with bz2.open(raw, "rb") as f:
                yield f  # type: ignore[misc]
        elif head.startswith(b"\xfd7zXZ\x00"):
            with lzma.open(raw, "rb") as f:
                yield f  # type: ignore[misc]
        else:
            with open_layer(raw) as f:  # gzip, zstd or as it is
                yield f  # type: ignore[misc]


def is_tar_archive(path: Path) -> bool:
    """Whether the file decompresses to something whose first block is a valid tar header."""
    try:
        with _decompressed(path) as f:
            block = f.read(512)
    except (OSError, EOFError, lzma.LZMAError, InvalidArgument, ValueError):
        return False
    if len(block) < 512 or block == bytes(512):
        return False
    stored = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    return want == sum(block[:148]) + 8 * 32 + sum(block[156:])


def _extract_if_archive(path: Path, root: Path, parts: tuple[str, ...]) -> bool:
    if not is_tar_archive(path):
        return False
    with RootDir(root) as rd:
        resolved = rd.resolve_dir(parts, create=True)
        assert resolved is not None
        try:
            with _decompressed(path) as stream:
                # The applier opens the target by this path: the descriptor was resolved inside
                # the root, and the applier walks everything below it as its own root.
                apply_layer(stream, Path(f"/proc/self/fd/{resolved.fd}"), whiteout_mode="delete")
        except (EOFError, lzma.LZMAError, OSError) as e:
            raise InvalidArgument(f"ADD {path.name}: broken archive: {error_text(e)}") from None
        finally:
            os.close(resolved.fd)
    return True


# -- URLs ---------------------------------------------------------------------------------------


def http_fetch(url: str, into: Path, *, timeout: float = 60.0) -> Fetched:
    """Download `url` into the directory `into` (urllib: proxies from the environment)."""
    name = posixpath.basename(urllib.parse.urlsplit(url).path)
    fd, tmp = tempfile.mkstemp(dir=into, prefix="download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, _CHUNK)
            modified = resp.headers.get("Last-Modified")
    except urllib.error.HTTPError as e:
        raise Unavailable(f"ADD {url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"ADD {url}: download failed: {getattr(e, 'reason', e)}") from None
    when = None
    if modified:
        try:
            when = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            when = None
    return Fetched(Path(tmp), when, name)


# -- the writer ---------------------------------------------------------------------------------


class _Writer:
    """Writes below directories resolved inside one root; every name handled with `*at` calls.

    Directories are passed down as (descriptor, canonical path); hard links are remembered by
    canonical path, not by descriptor, so a tree with many linked files holds no descriptors."""

    def __init__(self, rd: RootDir, owner: Owner | None, mode: int | None, preserve_owner: bool, what: str) -> None:
        self.rd = rd
        self.owner = owner
        self.mode = mode
        self.preserve_owner = preserve_owner
        self.what = what
        self.links: dict[tuple[int, int], tuple[tuple[str, ...], str]] = {}  # (dev, ino) -> (parent, name)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.links.clear()

    def is_dir(self, parts: tuple[str, ...]) -> bool:
        try:
            resolved = self.rd.resolve_dir(parts)
        except NotADirectory:
            return False
        if resolved is None:
            return False
        os.close(resolved.fd)
        return True

    def _on_create(self, parent_fd: int, name: str, _canonical: tuple[str, ...]) -> None:
        if self.owner is not None:
            os.chown(name, self.owner.uid, self.owner.gid, dir_fd=parent_fd, follow_symlinks=False)

    def _open_dir(self, parts: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        try:
            resolved = self.rd.resolve_dir(parts, create=True, on_create=self._on_create)
        except NotADirectory as e:
            raise InvalidArgument(f"{self.what}: /{'/'.join(e.canonical)} is not a directory") from None
        assert resolved is not None
        try:
            return os.open(".", _OPEN_DIR_RD, dir_fd=resolved.fd), resolved.canonical
        finally:
            os.close(resolved.fd)

    def copy_file(self, src: Path, parent: tuple[str, ...], name: str) -> None:
        dir_fd, canonical = self._open_dir(parent)
        try:
            self._entry(src, os.stat(src), dir_fd, canonical, name)
        finally:
            os.close(dir_fd)

    def copy_dir_contents(self, src: Path, parts: tuple[str, ...]) -> None:
        dir_fd, canonical = self._open_dir(parts)
        try:
            self._tree(src, dir_fd, canonical)
        finally:
            os.close(dir_fd)

    def _tree(self, src: Path, dir_fd: int, canonical: tuple[str, ...]) -> None:
        with os.scandir(src) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            self._entry(Path(entry.path), entry.stat(follow_symlinks=False), dir_fd, canonical, entry.name)

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        if self.preserve_owner:
            return st.st_uid, st.st_gid
        return 0, 0

    def _entry(self, src: Path, st: os.stat_result, dir_fd: int, canonical: tuple[str, ...], name: str) -> None:
        existing = _lstat_at(dir_fd, name)
        uid, gid = self._ids(st)
        perm = self.mode if self.mode is not None else stat.S_IMODE(st.st_mode)
        times = (st.st_atime_ns, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(name, dir_fd=dir_fd)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            fd = os.open(name, _OPEN_DIR_RD, dir_fd=dir_fd)
            try:
                self._tree(src, fd, (*canonical, name))
                set_attributes(fd, st, owner=(uid, gid), mode=perm)  # last: the children changed it
            finally:
                os.close(fd)
            return
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise InvalidArgument(f"{self.what}: cannot overwrite the directory {name!r} with a non-directory")
            os.unlink(name, dir_fd=dir_fd)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISLNK(st.st_mode) and key in self.links and self._link(key, dir_fd, name):
            return
        if stat.S_ISREG(st.st_mode):
            src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fd = os.open(name, _OPEN_WRITE, 0o600, dir_fd=dir_fd)
                try:
                    copy_bytes(src_fd, fd, st.st_size)
                    set_attributes(fd, st, owner=(uid, gid), mode=perm)
                finally:
                    os.close(fd)
            finally:
                os.close(src_fd)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), name, dir_fd=dir_fd)
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            os.utime(name, ns=times, dir_fd=dir_fd, follow_symlinks=False)
            return  # a symlink's link count is not ours to keep
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dir_fd)
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:  # no fchmod on O_PATH; the magic link is this inode
                set_attributes(f"/proc/self/fd/{fd}", st, owner=(uid, gid), mode=perm)
            finally:
                os.close(fd)
        else:
            return  # sockets: docker skips them too
        if st.st_nlink > 1:
            self.links[key] = (canonical, name)

    def _link(self, key: tuple[int, int], dir_fd: int, name: str) -> bool:
        """Hard-link `name` to the copy made earlier of the same source inode; False when that
        copy is gone (overwritten by a later source), so the caller copies instead."""
        parent, first = self.links[key]
        first_fd = self.rd.open_canonical_dir(parent)
        if first_fd is None:
            return False
        try:
            os.link(first, name, src_dir_fd=first_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(first_fd)
        return True


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
