"""`python -m shim [flags] start|delete|serve`: containerd's runtime v2 shim command line.

Installed as `containerd-shim-dockyard-v2` too: that is the binary a stock containerd runs for
runtime `io.containerd.dockyard.v2` (containerd-shim-<name>-<version>, found in its PATH).

Flags as containerd's shims take them (Go's flag syntax: `-name value`, `-name=value`, one or
two dashes): -namespace, -address (the daemon's gRPC socket), -publish-binary, -id, -bundle
(default: the cwd), -socket (serve: where to listen), -debug, -v. TTRPC_ADDRESS in the
environment is where events go.

start   Listen on `<bundle>/shim.sock` (mode 0600; /run/dockyard-shim/<hash>.sock when that path is
        too long for a unix socket: the daemon dials the address we print, so it must fit), have
        the serving shim forked on it (its own session, stdio on the bundle's `log` FIFO), have
        `address` and `shim.pid` written in the bundle, print `unix://<path>`, exit 0. The runtime
        options (a serialized Any) arrive on stdin and are not needed. A live shim already
        serving the bundle is answered with its address. Fails (exit 1) only when a zygote took
        the request and never answered (see `shim.zygote`).
        The paths and the zygote protocol are `dockyard_common.shimlaunch` (the daemon's side too).
delete  Clean up after a dead shim; print a serialized DeleteResponse (see `shim.cleanup`).
serve   Serve the Task API in the foreground (start does this in its forked child).

Start time and memory are the point here: this module imports only what an action needs, and
`start` only makes the socket: the zygote (see `shim.zygote`) forks the serving shim from a warm
process, or — when there is none yet — `start` forks it itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass

from dockyard_common.shimlaunch import (
    EVENTS_ENV,
    Launch,
    address,
    enabled,
    launch_for,
    listen_for,
    record_address,
    request_shim,
    runtime_dir,
    socket_path,
    zygote_socket_path,
)

VERSION = "dockyard-shim 0.1.0 (containerd runtime v2, task API v2)"


@dataclass
class Options:
    namespace: str = ""
    address: str = ""
    publish_binary: str = ""
    id: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    action: str = ""


class UsageError(Exception):
    pass


_VALUE_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket"}
_BOOL_FLAGS = {"debug", "v"}


def parse_args(argv: list[str]) -> Options:
    """Go flag package semantics: flags first, parsing stops at the first non-flag (the action)."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            if eq and value.lower() not in ("1", "0", "t", "f", "true", "false"):
                raise UsageError(f"invalid boolean value {value!r} for -{name}")
            on = not eq or value.lower() in ("1", "t", "true")
            if name == "debug":
                opts.debug = on
            else:
                opts.version = on
        elif name in _VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(opts, name.replace("-", "_"), value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    opts.action = rest[0] if rest else "serve"
    return opts


# ----- start -------------------------------------------------------------------------------------


def start(opts: Options, bundle: str) -> int:
    sys.stdin.buffer.read()  # the runtime options Any: nothing in runc's Options changes this shim
    sys.stdout.write(start_shim(_launch(opts, bundle)))
    return 0


def start_shim(launch: Launch) -> str:
    """Have a shim serve `launch`, forked by the warm zygote or else by us; returns its address."""
    from shim import state, zygote

    listener = listen_for(launch)
    if listener is None:  # a live shim serves this bundle already (a retried start) or its group
        if launch["group"]:
            record_address(launch)
        return address(launch)
    try:
        zpath = zygote_socket_path(launch) if enabled() else None
        # The zygote records shim.pid and address itself before it answers.
        if zpath is None or not request_shim(launch, listener.fileno(), zpath):
            if zpath is not None:
                with contextlib.suppress(OSError):  # no zygote (e.g. its dir not writable): fork as below
                    # for the next start; this one forks its shim itself
                    zygote.launch_zygote(zpath, runtime_dir(launch) or "")
            pid = _fork_shim(launch, listener)
            state.write_file(launch["bundle"], state.SHIM_PID, str(pid))
            state.write_file(launch["bundle"], state.ADDRESS, address(launch))
    finally:
        listener.close()
    return address(launch)


def _launch(opts: Options, bundle: str) -> Launch:
    return launch_for(opts.namespace, opts.id, bundle, os.environ.get(EVENTS_ENV, ""), opts.debug)


def _fork_shim(launch: Launch, listener: socket.socket) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # The shim never speaks TLS: keep asyncio from loading OpenSSL (~2.5 MiB).
            sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
            from shim.serve import run

            code = run(launch, listener.detach())
        finally:
            os._exit(code)
    return pid


# ----- delete / serve ----------------------------------------------------------------------------


def delete(bundle: str) -> int:
    from shim.cleanup import delete_response

    sys.stdout.buffer.write(delete_response(bundle))
    return 0


def serve_foreground(opts: Options, bundle: str) -> int:
    from dockyard_common.unixsock import listen
    from shim.serve import run

    path = opts.socket.removeprefix("unix://") or socket_path(bundle)
    listener = listen(path)
    os.chdir(bundle)
    # Serving where it was told to, for this bundle alone: no group's socket to take over.
    launch = _launch(opts, bundle)
    launch["socket"], launch["group"] = path, ""
    return run(launch, listener.detach(), detach=False)


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.version:
            print(VERSION)
            return 0
        if not opts.namespace:
            raise UsageError("shim namespace cannot be empty")
        if opts.action not in ("start", "delete", "serve"):
            raise UsageError(f"unknown action {opts.action!r} (start, delete or serve)")
        if opts.action != "serve" and not opts.id:
            raise UsageError("-id is required")
    except UsageError as exc:
        print(f"shim: {exc}", file=sys.stderr)
        print("usage: python -m shim -namespace NS -id ID [-address A] [-publish-binary B] [-bundle DIR] "
              "[-socket PATH] [-debug] start|delete|serve", file=sys.stderr)
        return 2
    bundle = os.path.abspath(opts.bundle or os.getcwd())
    try:
        if opts.action == "start":
            code = start(opts, bundle)
            sys.stdout.flush()
            os._exit(code)  # skip the interpreter's teardown: the daemon waits for our exit
        if opts.action == "delete":
            return delete(bundle)
        return serve_foreground(opts, bundle)
    except Exception as exc:  # the daemon shows stderr when we fail: one clear line
        print(f"shim {opts.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
