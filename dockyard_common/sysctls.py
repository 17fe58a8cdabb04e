"""Which namespace a sysctl belongs to: the one rule dock's `--sysctl`, the CRI's pod sysctls
and the shim's spec check share. A sysctl outside these is the host's (`vm.*`, `kernel.panic`):
writing it from a container would change the host.

    namespace_of("net.ipv4.ip_forward") == "network"; namespace_of("vm.swappiness") is None
"""

from __future__ import annotations

# runc's (and Kubernetes') namespaced lists: these IPC keys, keys under fs.mqueue. (IPC), net.*
# (network), and the UTS names.
IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                         "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
IPC_SYSCTL_PREFIX, NET_SYSCTL_PREFIX = "fs.mqueue.", "net."
UTS_SYSCTLS = frozenset({"kernel.hostname", "kernel.domainname"})


def namespace_of(key: str) -> str | None:
    """"ipc", "network" or "uts" for a namespaced sysctl (dotted), None for the host's."""
    if key in IPC_SYSCTLS or key.startswith(IPC_SYSCTL_PREFIX):
        return "ipc"
    if key.startswith(NET_SYSCTL_PREFIX):
        return "network"
    if key in UTS_SYSCTLS:
        return "uts"
    return None
