"""Untrusted text end to end, on a real dockyardd: image archives whose JSON Python reads
differently from Go, `dock` given arguments that are not UTF-8, and messages holding ESC sequences.

- A config, manifest, index.json or docker manifest.json holding a number of 5 000 digits, `1e999`,
  `NaN` or nesting 5 000 deep: `dock load` (the daemon's importer) refuses it as InvalidArgument in
  words, never Internal with Python's ("Exceeds the limit (4300 digits)..."), and keeps nothing.
  Before: the digits were an internal error, `1e999` and `NaN` imported (Go refuses both).
- A config whose Env holds `\\udcff` and `\\ud800` escapes: imported (by dock load or by ctr) and
  runnable, the values read as Go reads them, with U+FFFD. Before: `dock run` failed with
  "Exec: 'utf-8' codec can't encode character '\\ud800' ...: internal", or set the raw byte.
- `dock` arguments that are not UTF-8 are refused before anything is sent, naming the argument.
- An ESC sequence in any message (the daemon's, an archive's platform, dock's own) reaches the
  terminal escaped as Go's %q escapes it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common.errors import InvalidArgument
from tests.compat.conftest import ctr
from tests.compat.runtimes import daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import REPO, DaemonProcess
from tests.image_fuzz import base_layer
from tests.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Image, build_image, sha256

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

PYTHON_WORDS = ("Exceeds the limit", "set_int_max_str_digits", "codec", "surrogates", "recursion", "Traceback",
                "Error", "internal", "Internal")
ESC = "\x1b]0;owned\x07\x1b[2J"
ESCAPED = "\\x1b]0;owned\\a\\x1b[2J"  # as Go's %q writes it

# JSON text Python reads differently from Go, and the words the refusal must hold.
HOSTILE = {
    "digits": (b"1" + b"0" * 5000, "(5001 digits) is out of range"),
    "inf": (b"1e999", "1e999 is out of range"),
    "nan": (b"NaN", "NaN is not a JSON value"),
    "deep": (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
}
WHERE = ["config", "manifest", "index.json", "docker manifest.json"]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d
        remove_everything(d)
        assert "Traceback" not in d.log(), d.log()[-5000:]


@pytest.fixture(scope="module")
def base() -> bytes:
    return base_layer()


def _with_field(doc: bytes, raw: bytes) -> bytes:
    """The JSON object `doc` with one more field, `"x": <raw>` (raw JSON text, as written)."""
    assert doc.rstrip().endswith(b"}")
    return doc.rstrip()[:-1] + b', "x": ' + raw + b"}"


def _image(name: str, config: bytes, base: bytes) -> Image:
    """An image of `base` whose config blob is `config` as given (bytes no json.dumps would write)."""
    layers = build_image(name, [base]).layers
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)}
                                      for b in layers]}).encode()
    return Image(name, manifest, config, layers, {sha256(b): b for b in [config, manifest, *layers]}, [base])


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _oci(img: Image, *, index: bytes | None = None, platform: dict[str, str] | None = None) -> bytes:
    entry: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
                                "annotations": {"io.containerd.image.name": img.name}}
    if platform is not None:
        entry["platform"] = platform
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    files |= {f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in img.blobs.items()}
    files["index.json"] = index or json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                               "manifests": [entry]}).encode()
    return _tar(files)


def _archive(where: str, raw: bytes, name: str, base: bytes) -> bytes:
    good = build_image(name, [base])
    if where == "config":
        return _oci(_image(name, _with_field(good.config, raw), base))
    if where == "manifest":
        manifest = _with_field(good.manifest, raw)
        img = Image(name, manifest, good.config, good.layers,
                    {**{d: b for d, b in good.blobs.items() if b is not good.manifest}, sha256(manifest): manifest})
        return _oci(img)
    if where == "index.json":
        index = json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": good.manifest_digest, "size": len(good.manifest)}]}).encode()
        return _oci(good, index=_with_field(index, raw))
    listing = json.dumps([{"Config": "config.json", "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    return _tar({"config.json": good.config, "layer.tar": base,
                 "manifest.json": listing[:-1] + b", " + raw + b"]"})


def _dock(d: DaemonProcess, *args: str | bytes, tmp: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """dock as a user runs it; bytes arguments reach it as bytes (argv need not be UTF-8)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    env.pop("DOCK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env, cwd=REPO,
                          timeout=120)


def _one_clean_line(res: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = res.stderr.decode()
    assert res.returncode == 1, (res.returncode, err)
    assert err.startswith("dock: ") and err.count("\n") == 1, err
    assert "\x1b" not in err and "\x07" not in err, err
    for w in words:
        assert w in err, err
    for w in PYTHON_WORDS:
        assert w not in err, err
    return err


def _images(d: DaemonProcess) -> list[str]:
    return ctr(d, "images", "ls", "-q").stdout.split()


# -- JSON Python reads differently from Go ------------------------------------------------------------------


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_dock_load_refuses_json_go_refuses_in_words(daemon: DaemonProcess, base: bytes, tmp_path: Path,
                                                    case: str, where: str) -> None:
    raw, words = HOSTILE[case]
    name = f"docker.io/library/untrusted-{case}:{where.split()[-1].replace('.', '-')}"
    archive = tmp_path / "a.tar"
    archive.write_bytes(_archive(where, raw, name, base))
    before = _images(daemon)
    err = _one_clean_line(_dock(daemon, "load", "-i", str(archive)), words, "is not valid JSON")
    assert err.rstrip().endswith(": invalid argument"), err
    assert _images(daemon) == before


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_the_status_is_invalid_argument(daemon: DaemonProcess, base: bytes, case: str) -> None:
    raw, words = HOSTILE[case]
    async with Client(daemon.address, "default") as client:
        with pytest.raises(InvalidArgument) as info:  # the gRPC status INVALID_ARGUMENT, mapped back
            await client.transfer.import_archive(_archive("config", raw, f"untrusted-api-{case}:1", base))
        assert words in info.value.message, info.value.message
        assert await client.leases.list() == []


@pytest.mark.parametrize("how", ["dock load", "ctr import"])
def test_lone_surrogates_read_as_go_reads_them_and_run(daemon: DaemonProcess, base: bytes, tmp_path: Path,
                                                      how: str) -> None:
    name = f"docker.io/library/untrusted-surrogates:{how.split()[0]}"
    good = build_image(name, [base])
    config = good.config.replace(b'"Env": [', b'"Env": ["S=a\\udcffb", "T=\\ud800", ', 1)
    config = _with_field(config, b'{"\\udcffkey": "\\udc80"}')
    assert b"\\udcff" in config and b'"T=\\ud800"' in config
    archive = tmp_path / "s.tar"
    archive.write_bytes(_oci(_image(name, config, base)))
    if how == "dock load":
        res = _dock(daemon, "load", "-i", str(archive))
        assert res.returncode == 0, res.stderr.decode()
    else:
        res2 = ctr(daemon, "images", "import", str(archive))
        assert res2.returncode == 0, res2.stderr
    run = _dock(daemon, "run", "--rm", "--net", "none", name, "sh", "-c", 'printf "%s|%s" "$S" "$T"')
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == "a\ufffdb|\ufffd".encode(), run.stdout
    inspect = _dock(daemon, "image", "inspect", name)
    assert inspect.returncode == 0 and "Traceback" not in inspect.stderr.decode(), inspect.stderr.decode()


# -- dock's arguments and error line ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "n", "typed"), [
    ([b"create", b"--label", b"a=\xff", b"busybox", b"true"], 3, "a=\\xff"),
    ([b"run", b"--rm", b"--net", b"none", b"busybox", b"echo", b"\xc3("], 7, "\\xc3("),
    ([b"create", b"--name", b"n\xed\xa0\x80", b"busybox"], 3, "n\\xed\\xa0\\x80"),
])
def test_arguments_that_are_not_utf8_are_refused_up_front(daemon: DaemonProcess, argv: list[bytes], n: int,
                                                         typed: str) -> None:
    err = _one_clean_line(_dock(daemon, *argv))
    assert err == f"dock: '{typed}' is not UTF-8 text (argument {n}): dock's arguments must be valid UTF-8\n", err
    assert ctr(daemon, "containers", "ls", "-q").stdout.split() == []


def test_an_esc_sequence_in_the_daemons_message_is_escaped(daemon: DaemonProcess) -> None:
    """The snapshot key comes back in the daemon's NotFound as it was sent."""
    _one_clean_line(_dock(daemon, "snapshots", "info", f"k{ESC}"), f"snapshot k{ESCAPED} does not exist")


def test_an_esc_sequence_in_an_archives_platform_is_escaped(daemon: DaemonProcess, base: bytes,
                                                            tmp_path: Path) -> None:
    """The image's own words, quoted back by the importer: the platforms the archive offers."""
    img = build_image("docker.io/library/untrusted-platform:1", [base])
    archive = tmp_path / "p.tar"
    archive.write_bytes(_oci(img, platform={"os": f"plan9{ESC}", "architecture": "amd64"}))
    _one_clean_line(_dock(daemon, "load", "-i", str(archive)), "no image in the archive matches",
                    f"plan9{ESCAPED}/amd64")


@pytest.mark.parametrize(("argv", "words"), [
    (["create", "--label-file", f"/nonexistent/{ESC}", "busybox"], f"--label-file /nonexistent/{ESCAPED}"),
    (["tag", "busybox", f"x{ESC}"], f"(library/x{ESCAPED}) must be lowercase"),
    (["run", "--rm", "--net", "none", "-v", f"/nonexistent/{ESC}:/x", "busybox", "true"],
     f"host path /nonexistent/{ESCAPED} does not exist"),
])
def test_an_esc_sequence_in_dock_s_own_message_is_escaped(daemon: DaemonProcess, argv: list[str],
                                                          words: str) -> None:
    _one_clean_line(_dock(daemon, *argv), words)
    assert ctr(daemon, "containers", "ls", "-q").stdout.split() == []
