"""Container init: an OCI runtime spec → a container process, in runc's order.

`spec` parses config.json, `plan` orders the steps (pure), `rootfs` and `process` perform them,
`create` forks and runs the handshake. See `create` for the API the shim's task service uses.
"""

from shim.init.create import ContainerProcess, StdioFds, create_container, exec_process, join_cgroups_of
from shim.init.spec import Process, Spec, default_spec, parse_process, parse_spec

__all__ = [
    "ContainerProcess",
    "Process",
    "Spec",
    "StdioFds",
    "create_container",
    "default_spec",
    "exec_process",
    "join_cgroups_of",
    "parse_process",
    "parse_spec",
]
