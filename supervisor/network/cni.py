"""The CNI runner: executes plugin binaries for a network configuration list, per the CNI spec.

Words (CNI spec 1.0): a *conflist* is ``{"cniVersion", "name", "plugins": [...]}``; each plugin
entry has a ``type`` naming a binary found in ``plugin_dirs`` (Debian's containernetworking-plugins
put them in /usr/lib/cni). A *result* is the JSON an ADD prints (interfaces, ips, routes, dns).
A plugin's *runtimeConfig* receives only the keys its ``capabilities`` enable (e.g. portmap's
``portMappings``).

Lifecycle per attachment (container id + interface name + netns): ``add`` (each plugin in order;
plugin N's result is plugin N+1's ``prevResult``; the last result is returned and must be kept by
the caller) → any number of ``check`` (each plugin in order, ``prevResult`` = the kept result;
nothing for a cniVersion before 0.4.0) → ``delete`` (each plugin in reverse order with the kept
result; runs every plugin even when one fails, then raises the first failure, because a partial DEL
is still worth doing; a plugin binary that is missing is skipped with a warning). ``delete`` with no
kept result and no netns is valid: plugins release what they can (IPAM addresses, firewall chains).

Errors: CNIPluginError (a FailedPrecondition) carries the plugin's own error JSON (``code``,
``msg``, ``details``) or its exit status and stderr, shown as they are; PluginNotFound
(FailedPrecondition) names the type and the directories searched; DeadlineExceeded when a
plugin outlives ``timeout``; InvalidArgument for a conflist the runner cannot use.

Example::

    runner = CNIRunner([Path("/usr/lib/cni")], timeout=60)
    result = await runner.add(conflist, "c1", "/run/dockyard/netns/default-c1", "eth0",
                              runtime_config={"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                                 "protocol": "tcp"}]})
    await runner.check(conflist, "c1", netns, "eth0", result, runtime_config=...)
    await runner.delete(conflist, "c1", netns, "eth0", result, runtime_config=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dockyard_common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument

DEFAULT_PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
DEFAULT_TIMEOUT = 60.0
CNI_VERSION = "1.0.0"
log = logging.getLogger(__name__)


class CNIPluginError(FailedPrecondition):
    """A plugin reported failure: its code/msg/details as it sent them, or its exit status."""

    def __init__(self, message: str, *, plugin: str, command: str, code: int | None = None,
                 msg: str = "", details: str = "", exit_status: int | None = None) -> None:
        super().__init__(message)
        self.plugin, self.command, self.code = plugin, command, code
        self.msg, self.details, self.exit_status = msg, details, exit_status


class PluginNotFound(FailedPrecondition):
    pass


class CNIRunner:
    """Executes conflists; safe to call concurrently (a semaphore bounds plugin processes)."""

    def __init__(self, plugin_dirs: Sequence[Path] = DEFAULT_PLUGIN_DIRS, *, timeout: float = DEFAULT_TIMEOUT,
                 max_parallel: int = 8) -> None:
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_parallel)
        # one thread per running plugin (the semaphore bounds them), so plugins never wait for, or
        # fill, the default executor the rest of the daemon uses; threads start on first use
        self._waiters = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="cni-plugin")

    # ----- the three commands over a list -----------------------------------------------------

    async def add(self, conflist: Mapping[str, Any], container_id: str, netns: str, ifname: str, *,
                  args: Mapping[str, str] | None = None,
                  runtime_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        prev: dict[str, Any] | None = None
        for plugin in _plugins(conflist):
            out = await self._run("ADD", conflist, plugin, container_id, netns, ifname, args, runtime_config, prev)
            if not isinstance(out, dict):
                raise CNIPluginError(
                    f"network {conflist['name']!r}: plugin {plugin['type']!r} ADD printed no result",
                    plugin=plugin["type"], command="ADD")
            prev = out
        return prev or {"cniVersion": conflist.get("cniVersion", CNI_VERSION)}

    async def check(self, conflist: Mapping[str, Any], container_id: str, netns: str, ifname: str,
                    prev_result: Mapping[str, Any] | None, *, args: Mapping[str, str] | None = None,
                    runtime_config: Mapping[str, Any] | None = None) -> None:
        if _version(conflist) < (0, 4, 0):
            return  # CHECK came with CNI 0.4.0; older configs have nothing to check (per the spec)
        for plugin in _plugins(conflist):
            try:
                await self._run("CHECK", conflist, plugin, container_id, netns, ifname, args, runtime_config,
                                prev_result)
            except CNIPluginError as exc:
                if not _portmap_ipv6_check_bug(plugin, exc, prev_result):
                    raise
                # portmap < 1.2 (Debian 12's 1.1.1) CHECKs IPv6 chains it never made for an IPv4-only
                # container (containernetworking/plugins#819): not a fault, and it must not hide the
                # CHECK of the plugins after it
                log.debug("%s: ignored (portmap's IPv6 CHECK bug, containernetworking/plugins#819)", exc)

    async def delete(self, conflist: Mapping[str, Any], container_id: str, netns: str, ifname: str,
                     prev_result: Mapping[str, Any] | None, *, args: Mapping[str, str] | None = None,
                     runtime_config: Mapping[str, Any] | None = None) -> None:
        first: Exception | None = None
        for plugin in reversed(_plugins(conflist)):
            try:
                await self._run("DEL", conflist, plugin, container_id, netns, ifname, args, runtime_config,
                                prev_result)
            except PluginNotFound as exc:
                # a plugin that cannot run cannot have made anything to release (or was uninstalled,
                # and then no retry will ever succeed): skip it rather than pin the attachment
                log.warning("%s; DEL skips it", exc)
            except (CNIPluginError, DeadlineExceeded) as exc:
                first = first or exc
        if first is not None:
            raise first

    # ----- one plugin exec ------------------------------------------------------------------

    def find(self, plugin_type: str) -> Path:
        if not plugin_type or "/" in plugin_type or plugin_type.startswith("."):
            raise InvalidArgument(f"invalid CNI plugin type {plugin_type!r}")
        for d in self.plugin_dirs:
            candidate = d / plugin_type
            if os.access(candidate, os.X_OK) and candidate.is_file():
                return candidate
        dirs = ", ".join(str(d) for d in self.plugin_dirs)
        raise PluginNotFound(f"CNI plugin {plugin_type!r} not found in {dirs} "
                             "(is the containernetworking-plugins package installed?)")

    async def _run(self, command: str, conflist: Mapping[str, Any], plugin: Mapping[str, Any], container_id: str,
                   netns: str, ifname: str, args: Mapping[str, str] | None,
                   runtime_config: Mapping[str, Any] | None, prev: Mapping[str, Any] | None) -> Any:
        name = str(conflist["name"])
        ptype = str(plugin["type"])
        binary = self.find(ptype)
        stdin = json.dumps(plugin_config(conflist, plugin, runtime_config, prev)).encode()
        env = {
            # plugins run iptables, ip, sysctl: a PATH that has them, and nothing else of ours
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in (args or {}).items()),
            "CNI_PATH": os.pathsep.join(str(d) for d in self.plugin_dirs),
        }
        where = f"network {name!r}: plugin {ptype!r} {command}"
        async with self._slots:
            # subprocess.Popen starts the plugin with vfork (~0.5 ms); the event loop's own
            # subprocess support (uvloop: libuv's fork) blocked the loop ~4 ms per plugin in the
            # daemon, on every attach and detach. The plugin's output is read in a thread of ours.
            started = time.perf_counter()
            proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE,  # noqa: ASYNC220 (vfork: returns at exec)
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/")
            done = asyncio.get_running_loop().run_in_executor(self._waiters, _communicate, proc, stdin,
                                                              self.timeout)
            try:
                out, err = await asyncio.shield(done)
            except subprocess.TimeoutExpired:
                raise DeadlineExceeded(f"{where} did not finish within {self.timeout:g}s") from None
            except BaseException:
                # cancelled: the plugin goes too, and is reaped before we return
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await done
                raise
        log.debug("%s: %.1f ms", where, (time.perf_counter() - started) * 1e3)
        if proc.returncode != 0:
            raise _plugin_error(where, ptype, command, proc.returncode or 0, out, err)
        if not out.strip():
            return None
        try:
            return json.loads(out)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise CNIPluginError(f"{where} printed a result that is not JSON: {_clip(out)}",
                                 plugin=ptype, command=command) from None


def _communicate(proc: subprocess.Popen[bytes], stdin: bytes, timeout: float) -> tuple[bytes, bytes]:
    """Feed `stdin` to the plugin and read all it prints (in a worker thread); a plugin that
    outlives `timeout` is killed and reaped, then TimeoutExpired is raised."""
    try:
        return proc.communicate(stdin, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def plugin_config(conflist: Mapping[str, Any], plugin: Mapping[str, Any],
                  runtime_config: Mapping[str, Any] | None, prev: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stdin a plugin of a list receives: its entry plus name, cniVersion, runtimeConfig, prevResult."""
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist.get("cniVersion", CNI_VERSION)
    caps = plugin.get("capabilities") or {}
    rc = {k: v for k, v in (runtime_config or {}).items() if isinstance(caps, dict) and caps.get(k)}
    conf.pop("runtimeConfig", None)
    if rc:
        conf["runtimeConfig"] = rc
    conf.pop("prevResult", None)
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def _portmap_ipv6_check_bug(plugin: Mapping[str, Any], exc: CNIPluginError,
                            prev_result: Mapping[str, Any] | None) -> bool:
    """Whether `exc` is portmap's CHECK failing on IPv6 chains of a container without IPv6."""
    if plugin.get("type") != "portmap" or "could not check ipv6" not in str(exc):
        return False
    ips = (prev_result or {}).get("ips") or []
    return not any(":" in str(ip.get("address", "")) for ip in ips if isinstance(ip, dict))


def _version(conflist: Mapping[str, Any]) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(conflist.get("cniVersion", CNI_VERSION)).split("."))
    except ValueError:
        return (0,)


def _plugins(conflist: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins or not all(
            isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
        raise InvalidArgument(f"network {conflist.get('name')!r}: \"plugins\" must be a non-empty list of "
                              "objects with a \"type\"")
    return plugins


def _plugin_error(where: str, ptype: str, command: str, status: int, out: bytes, err: bytes) -> CNIPluginError:
    try:
        doc = json.loads(out)
    except (ValueError, RecursionError):  # not CNI's error document: reported as text below
        doc = None
    if isinstance(doc, dict) and ("msg" in doc or "code" in doc):
        code = doc.get("code")
        msg, details = str(doc.get("msg", "")), str(doc.get("details", ""))
        text = f"{where} failed: {msg}" + (f": {details}" if details else "") + f" (CNI error code {code})"
        return CNIPluginError(text, plugin=ptype, command=command, code=code if isinstance(code, int) else None,
                   msg=msg, details=details, exit_status=status)
    said = _clip(err) or _clip(out) or "no output"
    return CNIPluginError(f"{where} failed with exit status {status}: {said}", plugin=ptype, command=command,
                          exit_status=status)


def _clip(data: bytes, limit: int = 2000) -> str:
    text = data.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
