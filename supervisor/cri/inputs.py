"""Hostile values in CRI configs, refused before anything is made (InvalidArgument naming the
field). The services' conversion checks what the proto alone can tell (enums, signs, ranges);
this module checks what would otherwise reach a file, a path or the kernel in a form nobody
asked for:

- text the kernel or a generated file cannot hold: a NUL in a path, argument or variable (execve
  and path syscalls stop at it), whitespace in a DNS word (a newline in a search domain wrote a
  `nameserver` line of the caller's into resolv.conf);
- paths that leave where they belong: `..` in a log path (the log was created outside the pod's
  log directory), a relative log directory (the daemon's working directory), a seccomp profile
  that is a FIFO (its read blocked the event loop: every client) or /dev/zero (read for ever);
- sysctls that are not the container's own (`vm.*` changes the host's, a name with `..` is a path
  under /proc/sys), ids beyond uid_t, more groups than NGROUPS_MAX, cpusets that are not a list
  of this host's CPUs, duplicate port mappings.

    check_pod(config)                     # PodConfig, at RunPodSandbox
    check_container(config)               # ContainerConfig, at CreateContainer
    check_log_file(path)                  # blocking: at create and again before the start
    profile = read_seccomp_profile(path)  # blocking: a localhost profile's JSON, bounded
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.sysctls import namespace_of as namespace_of_sysctl
from supervisor.cri.container_types import ContainerConfig, Resources
from supervisor.cri.sandbox_types import NamespaceMode, PodConfig
from supervisor.network.resolv import check_dns_words

MAX_ID = 2**32 - 2  # uid_t/gid_t; 2^32-1 is (uid_t)-1, "no change" to setresuid
NGROUPS_MAX = 65536
MAX_PROFILE = 1 << 20  # bytes of a seccomp profile (Docker's default is ~20 KiB)
MAX_DNS_ITEMS = 32  # per list (Kubernetes allows 3 servers and 32 search domains)
MAX_DNS_CHARS = 2048  # per list, joined (Kubernetes' search list limit); labels hold 4 KiB
# Kubernetes' sysctl name grammar (dots or slashes between segments): no "..", no empty segment.
SYSCTL_NAME = re.compile(r"([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?")
CPU_LIST = re.compile(r"\d{1,5}(-\d{1,5})?(,\d{1,5}(-\d{1,5})?)*")
CPUS_ONLINE = Path("/sys/devices/system/cpu/online")
NODES_ONLINE = Path("/sys/devices/system/node/online")


def no_nul(where: str, values: Iterable[str]) -> None:
    for value in values:
        if "\0" in value:
            raise InvalidArgument(f"{where}: {_shown(value)} holds a NUL character")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def _relative_file(where: str, path: str) -> None:
    no_nul(where, [path])
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or path.endswith("/") or parts[-1] in ("", "."):
        raise InvalidArgument(f"{where} {_shown(path)} must be a file path inside the pod's log directory "
                              "(relative, without '..')")


# -- pods ------------------------------------------------------------------------------------------

def check_pod(config: PodConfig) -> None:
    where = "pod sandbox config"
    m = config.metadata
    no_nul(f"{where}: metadata", [m.name, m.uid, m.namespace])
    d = config.log_directory
    if d:
        no_nul(f"{where}: log_directory", [d])
        if not d.startswith("/") or ".." in d.split("/"):
            raise InvalidArgument(f"{where}: log_directory {_shown(d)} must be an absolute path without '..'")
    _check_dns(config)
    _check_sysctls(config)
    _check_ports(config)
    s = config.security
    _check_ids(where, s.run_as_user, s.run_as_group, s.supplemental_groups)


def _check_dns(config: PodConfig) -> None:
    where = "pod sandbox config: dns_config"
    dns = config.dns
    for name, values in (("servers", dns.servers), ("searches", dns.searches), ("options", dns.options)):
        if len(values) > MAX_DNS_ITEMS or sum(len(v) + 1 for v in values) > MAX_DNS_CHARS:
            raise InvalidArgument(f"{where}.{name}: at most {MAX_DNS_ITEMS} entries and {MAX_DNS_CHARS} characters")
        check_dns_words(f"{where}.{name}", values)
    for server in dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"{where}.servers: {_shown(server)} is not an IP address") from None


def _check_sysctls(config: PodConfig) -> None:
    host_net = config.namespaces.network == NamespaceMode.NODE
    host_ipc = config.namespaces.ipc == NamespaceMode.NODE
    for key, value in config.sysctls.items():
        where = f"pod sandbox config: linux.sysctls[{_shown(key)}]"
        if not SYSCTL_NAME.fullmatch(key):
            raise InvalidArgument(f"{where}: not a sysctl name")
        if "\0" in value or "\n" in value:
            raise InvalidArgument(f"{where}: the value holds a NUL or newline")
        kind = namespace_of_sysctl(key.replace("/", "."))
        if kind is None:
            raise InvalidArgument(f"{where}: not a namespaced sysctl (it would change the host's)")
        if kind == "ipc" and host_ipc:
            raise InvalidArgument(f"{where}: a pod on the host's IPC namespace cannot set IPC sysctls")
        if kind == "uts" and host_net:
            raise InvalidArgument(f"{where}: a pod on the host's network shares the host's UTS namespace")
        if kind == "network" and host_net:
            raise InvalidArgument(f"{where}: a pod on the host's network cannot set network sysctls")


def _check_ports(config: PodConfig) -> None:
    seen: set[tuple[str, str, int]] = set()
    for i, p in enumerate(config.ports):
        where = f"pod sandbox config: port_mappings[{i}]"
        if p.host_ip:
            try:
                ipaddress.ip_address(p.host_ip)
            except ValueError:
                raise InvalidArgument(f"{where}: host_ip {_shown(p.host_ip)} is not an IP address") from None
        key = (p.protocol, p.host_ip, p.host_port)
        if key in seen:
            raise InvalidArgument(f"{where}: host port {p.host_port}/{p.protocol} is mapped twice")
        seen.add(key)


def _check_ids(where: str, uid: int | None, gid: int | None, groups: tuple[int, ...]) -> None:
    for name, value in (("run_as_user", uid), ("run_as_group", gid)):
        if value is not None and value > MAX_ID:
            raise InvalidArgument(f"{where}: security_context.{name} {value} is beyond the ids of Linux (0..{MAX_ID})")
    if len(groups) > NGROUPS_MAX:
        raise InvalidArgument(f"{where}: security_context.supplemental_groups: {len(groups)} groups, "
                              f"at most {NGROUPS_MAX}")
    if any(g > MAX_ID for g in groups):
        raise InvalidArgument(f"{where}: security_context.supplemental_groups: ids are within 0..{MAX_ID}")


# -- containers ------------------------------------------------------------------------------------

def check_container(config: ContainerConfig) -> None:
    where = "container config"
    if config.log_path:
        _relative_file(f"{where}: log_path", config.log_path)
    no_nul(f"{where}: metadata.name", [config.metadata.name])
    no_nul(f"{where}: command and args", [*config.command, *config.args])
    no_nul(f"{where}: envs", [text for kv in config.envs for text in kv])
    no_nul(f"{where}: working_dir", [config.working_dir])
    for i, m in enumerate(config.mounts):
        no_nul(f"{where}: mounts[{i}]", [m.container_path, m.host_path, m.image_sub_path])
    for i, d in enumerate(config.devices):
        no_nul(f"{where}: devices[{i}]", [d.container_path, d.host_path])
    s = config.security
    no_nul(f"{where}: security_context.run_as_username", [s.run_as_username])
    for name, paths in (("masked_paths", s.masked_paths), ("readonly_paths", s.readonly_paths)):
        no_nul(f"{where}: security_context.{name}", paths)
        for p in paths:
            if not p.startswith("/") or ".." in p.split("/"):
                raise InvalidArgument(f"{where}: security_context.{name}: {_shown(p)} must be an absolute path "
                                      "without '..'")
    _check_ids(where, s.run_as_user, s.run_as_group, s.supplemental_groups)
    check_resources(config.resources)


def check_resources(r: Resources) -> None:
    """Cpusets as the kernel's list syntax naming this host's CPUs and memory nodes (a cgroup
    write refused at the start would otherwise be the first word of it)."""
    for name, text, online in (("cpuset_cpus", r.cpuset_cpus, CPUS_ONLINE), ("cpuset_mems", r.cpuset_mems,
                                                                           NODES_ONLINE)):
        if not text:
            continue
        where = f"container config: resources.{name} {_shown(text)}"
        wanted = _cpu_list(text)
        if wanted is None:
            raise InvalidArgument(f"{where}: not a list like 0-3,5")
        present = _online(online)
        if present is not None and not wanted <= present:
            raise InvalidArgument(f"{where}: this host has only {online.name} {present_text(present)}")


def _cpu_list(text: str) -> set[int] | None:
    if not CPU_LIST.fullmatch(text):
        return None
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if hi < lo:
            return None
        out.update(range(lo, hi + 1))
    return out


def _online(path: Path) -> set[int] | None:
    try:
        return _cpu_list(path.read_text().strip())
    except OSError:
        return None  # no NUMA information (no node directory): the kernel judges


def present_text(ids: set[int]) -> str:
    return ",".join(str(i) for i in sorted(ids)) if len(ids) <= 16 else f"{min(ids)}-{max(ids)} ({len(ids)})"


# -- files -----------------------------------------------------------------------------------------

def check_log_file(path: str) -> None:
    """Blocking. The container's log must be a regular file or not exist yet: a FIFO held the
    shim (every container of the pod) in open(2), a symlink or device had the log written
    somewhere else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InvalidArgument(f"container log {path}: {exc.strerror or 'cannot be read'}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"container log {path}: exists and is a {_kind(st.st_mode)}, not a regular file")


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return word
    return "special file"


def read_seccomp_profile(path: str) -> Any:
    """Blocking. A localhost seccomp profile's JSON: an absolute path without '..' to a regular
    file of at most MAX_PROFILE bytes, opened without blocking (a FIFO never waits for a writer)."""
    where = f"seccomp profile {_shown(path)}"
    no_nul(where, [path])
    if not path.startswith("/") or ".." in path.split("/"):
        raise InvalidArgument(f"{where}: must be an absolute path without '..'")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise InvalidArgument(f"{where}: {exc.strerror or 'cannot be opened'}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{where}: is a {_kind(st.st_mode)}, not a regular file")
        if st.st_size > MAX_PROFILE:
            raise InvalidArgument(f"{where}: {st.st_size} bytes, larger than {MAX_PROFILE}")
        data = os.read(fd, MAX_PROFILE + 1)  # one read: a regular file gives what it has
    except OSError as exc:
        raise InvalidArgument(f"{where}: {exc.strerror or 'cannot be read'}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PROFILE:
        raise InvalidArgument(f"{where}: larger than {MAX_PROFILE} bytes")
    try:
        return json_value(data, "it")
    except JsonError as exc:  # (nested too deeply, NaN, ... too: jsonutil's one policy)
        raise InvalidArgument(f"{where}: not JSON ({str(exc).removeprefix('it is not valid JSON: ')})") from None
