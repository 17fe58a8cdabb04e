"""dock run: a container from an image, its task in the foreground (or detached with -d).

    dock run [--name NAME] [OPTIONS] IMAGE [CMD...]     # as Docker: the id is NAME, else 64 random hex
"""

from __future__ import annotations

import argparse
from typing import Any

from dock import cidfile, labelfile, runflags
from dock.args import images_arg, int_in, positive_float
from dock.attachflags import add_attach_option, check_attach, labels_for, parse_attach, shown_fds
from dock.autopull import add_pull_option
from dock.client import Client
from dock.containers import RUNC_V2
from dock.healthflags import add_health_options, health_from_args
from dock.lookup import check_name_free, new_container_id
from dock.network import network_options
from dock.oci import SECCOMP_DEFAULT, SpecOptions, parse_bytes, parse_mount, parse_security_opt, volume_options
from dock.runner import RunRequest, run
from dock.stopping import DEFAULT_STOP_TIMEOUT, STOP_SIGNAL_LABEL, STOP_TIMEOUT_LABEL, signal_name
from dockyard_common import detachkeys, restartpolicy
from dockyard_common.containerlog import labels_from_opts
from dockyard_common.errors import InvalidArgument


def add_container_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a container: shared by `run` and `containers create`."""
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable; KEY alone: our value of KEY, or when we have none, "
                        "KEY removed from the image's (as Docker)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="KEY=VALUE lines (# comments; KEY alone as -e KEY), before --env")
    p.add_argument("--cwd", "--workdir", "-w", default="", help="working directory in the container")
    p.add_argument("--entrypoint", default=None, metavar="CMD",
                   help="the executable to run instead of the image's Entrypoint (the image's Cmd is then "
                        "dropped too, as Docker; \"\" for none)")
    p.add_argument("--user", "-u", default="", help="user[:group] or uid[:gid] to run as")
    p.add_argument("--hostname", default="", help="the container's hostname")
    p.add_argument("--memory", "-m", default=None, metavar="BYTES", help="memory limit, e.g. 268435456 or 1g")
    p.add_argument("--cpus", type=positive_float, default=None, help="CPU quota in CPUs, e.g. 0.5")
    p.add_argument("--pids-limit", type=int_in(-1), default=None, metavar="N", help="most processes at once")
    p.add_argument("--memory-swap", default=None, metavar="BYTES",
                   help="memory and swap together, e.g. 1g (-1: unlimited swap); needs --memory")
    p.add_argument("--cpu-shares", type=int_in(2, 262144), default=None, metavar="N",
                   help="relative CPU weight (default 1024)")
    p.add_argument("--cpuset-cpus", default="", metavar="CPUS", help="the CPUs it may run on, e.g. 0-1,3")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a resource limit, e.g. nofile=4096:8192 (-1 or unlimited: no limit)")
    p.add_argument("--device", action="append", default=[], metavar="/dev/HOST[:/dev/PATH][:rwm]",
                   help="a host device in the container, allowed in its device cgroup")
    p.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE",
                   help="a namespaced kernel parameter (net.*, fs.mqueue.*, kernel.shm*/msg*/sem)")
    p.add_argument("--group-add", action="append", default=[], metavar="GROUP",
                   help="a supplementary group (a name of the image's /etc/group, or a gid)")
    p.add_argument("--shm-size", default=None, metavar="BYTES", help="size of /dev/shm (default 64m)")
    p.add_argument("--pid", default="", metavar="host", help="host: the host's PID namespace")
    p.add_argument("--ipc", default="", metavar="host", help="host: the host's IPC namespace and /dev/shm")
    p.add_argument("--stop-signal", default="", metavar="SIGNAL",
                   help="the signal `dock stop` sends first (default: the image's, else SIGTERM)")
    p.add_argument("--stop-timeout", type=int_in(-1, 2**31 - 1), default=None, metavar="SECONDS",
                   help=f"how long `dock stop` waits before SIGKILL (default {DEFAULT_STOP_TIMEOUT}; -1: for ever)")
    p.add_argument("--cidfile", default="", metavar="FILE", help="write the container's id to FILE (a new file)")
    p.add_argument("--mount", action="append", default=[], metavar="SPEC",
                   help="type=bind,src=/host/path,dst=/container/path,options=rbind:ro")
    p.add_argument("--volume", "-v", action="append", default=[], metavar="SRC:DST[:OPTS]",
                   help="NAME:/path (a named volume, made on first use and, while empty, filled with the "
                        "image's /path), /path (an anonymous volume, likewise filled) or /host/path:/path (a "
                        "bind; the host path must exist); OPTS: ro, rw, nocopy (volumes), a propagation (binds)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="/PATH[:OPTS]",
                   help="a tmpfs at PATH (nosuid, nodev, noexec), e.g. /run:size=64m,mode=1777")
    p.add_argument("--read-only", action="store_true", help="mount the container's root file system read-only")
    p.add_argument("--net", "--network", action="append", default=[], metavar="NET",
                   help="bridge: the default network (default); NAME: a network of `dock network ls` "
                        "(repeat for several); none: a network namespace with only lo; host: the host's; "
                        "container:ID: that container's")
    p.add_argument("--publish", "-p", action="append", default=[], metavar="[IP:][HOST:]CONTAINER[/PROTO]",
                   help="publish a container port on the host, e.g. 8080:80, 127.0.0.1:53:53/udp; "
                        "without HOST a free port (see `dock port`)")
    p.add_argument("--publish-all", "-P", action="store_true",
                   help="publish every port the image exposes (EXPOSE) on a free host port")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="a resolver for /etc/resolv.conf (default: the host's, loopback ones left out)")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN", help="a DNS search domain")
    p.add_argument("--dns-option", action="append", default=[], metavar="OPT", help="a resolv.conf option")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line for /etc/hosts")
    p.add_argument("--snapshotter", default="", help="snapshotter for the rootfs (default: overlayfs)")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE",
                   help="container label (KEY alone: an empty value)")
    p.add_argument("--label-file", action="append", default=[], metavar="FILE",
                   help="KEY=VALUE lines of labels (# comments), before --label")
    p.add_argument("--init", action="store_true",
                   help="run an init (tini) as PID 1 that forwards signals and reaps zombies")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="the container's log (`dock logs`): max-size=10m, max-file=3 (default: the daemon's)")
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="restart the container when it exits: no (default), always, unless-stopped, "
                        "on-failure[:MAX-RETRIES]; also when the daemon starts again (in the foreground: "
                        "shows the first run and returns its exit status)")
    add_health_options(p)
    p.add_argument("--runtime", default=RUNC_V2, help=f"runtime name (default {RUNC_V2})")
    p.add_argument("--platform", default="", help="image platform, e.g. linux/arm64 (default: this host's)")
    p.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="add a capability to the default set (e.g. NET_ADMIN; ALL for every one)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="drop a capability from the default set (e.g. CHOWN; ALL for every one)")
    p.add_argument("--privileged", action="store_true",
                   help="every capability, the host's devices, no seccomp filter, nothing masked in /proc")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined (no filter) or seccomp=PATH (a profile in Docker's JSON format, "
                        "or TOML); default: Docker's default profile's rules; no-new-privileges[=false]")
    p.add_argument("--name", default="",
                   help="the container's name, which is its id (default: 64 random hex digits)")
    images_arg(p, "image", help="image name, e.g. busybox or docker.io/library/busybox:latest")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments (default: the image's)")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a container from an image")
    p.add_argument("--rm", action="store_true",
                   help="remove the container (its snapshot and anonymous volumes) when it exits, also once "
                        "detached (-d, or ctrl-p ctrl-q): the daemon does it")
    p.add_argument("--detach", "-d", action="store_true", help="start the task and return, printing the id")
    p.add_argument("--interactive", "-i", action="store_true",
                   help="keep the process's stdin open (for `dock attach` too) and connect ours to it")
    p.add_argument("--detach-keys", default="", metavar="KEYS",
                   help="with -it, the keys that detach and leave it running, e.g. ctrl-a,x (default ctrl-p,ctrl-q)")
    add_attach_option(p)
    add_pull_option(p)
    add_container_options(p)
    p.set_defaults(handler=run_command)


def request_from_args(args: argparse.Namespace) -> RunRequest:
    try:
        flags = flags_from_args(args)
        env = runflags.environment(args.env_file, args.env)
        if args.hostname:
            runflags.check_hostname(args.hostname)
        memory = parse_bytes(args.memory) if args.memory is not None else None
        mounts = [parse_mount(m) for m in args.mount]
        volume_mounts, volumes = volume_options(args.volume, args.tmpfs, mounts)
        seccomp = [parse_security_opt(o) for o in args.security_opt
                   if runflags.parse_no_new_privileges(o) is None]
        log_labels = labels_from_opts(args.log_opt)
        labels = labelfile.labels(args.label_file, args.label)
        restart_labels = restart_labels_from(args)
        stop_labels = stop_labels_from(args)
        # -a and -i as Docker keeps them (AttachStdout..., StdinOnce) for `start -a` and `attach`
        attach_labels = labels_for(parse_attach(args.attach), interactive=getattr(args, "interactive", False),
                                   detach=getattr(args, "detach", False))
        health = health_from_args(args)
        network = network_options(args.net, args.publish, args.dns, args.dns_search, args.dns_option,
                                  args.add_host, hostname=args.hostname, publish_all=args.publish_all)
        cid = new_container_id(args.name)
        detach_keys = getattr(args, "detach_keys", "")
        detachkeys.parse(detach_keys)  # refused before anything is made
    except InvalidArgument as exc:
        raise SystemExit(f"dock: {exc}") from None
    spec = SpecOptions(args=list(args.args), env=env, cwd=args.cwd, user=args.user,
                       hostname=args.hostname, tty=args.tty, net=network.spec_net, memory=memory, cpus=args.cpus,
                       pids_limit=args.pids_limit, mounts=[*mounts, *volume_mounts], volumes=volumes,
                       readonly_root=args.read_only, cap_add=list(args.cap_add),
                       cap_drop=list(args.cap_drop), privileged=args.privileged,
                       seccomp=seccomp[-1] if seccomp else SECCOMP_DEFAULT, flags=flags)
    return RunRequest(args.image, cid, spec, rm=getattr(args, "rm", False),
                      detach=getattr(args, "detach", False), interactive=getattr(args, "interactive", False),
                      snapshotter=args.snapshotter,
                      labels={**log_labels, **labels, **restart_labels, **stop_labels, **attach_labels},
                      runtime=args.runtime,
                      platform=args.platform, network=network, detach_keys=detach_keys,
                      pull=getattr(args, "pull", "missing"), health=health, named=bool(args.name))


def flags_from_args(args: argparse.Namespace) -> runflags.RunFlags:
    """The Docker flags dock/runflags.py parses and applies."""
    no_new_privileges = [v for o in args.security_opt if (v := runflags.parse_no_new_privileges(o)) is not None]
    return runflags.RunFlags(
        entrypoint=runflags.parse_entrypoint(args.entrypoint),
        ulimits=[runflags.parse_ulimit(u) for u in args.ulimit],
        devices=[runflags.parse_device(d) for d in args.device],
        sysctls=dict(runflags.parse_sysctl(s) for s in args.sysctl),
        group_add=list(args.group_add),
        shm_size=parse_bytes(args.shm_size) if args.shm_size is not None else None,
        pid=runflags.parse_host_namespace("--pid", args.pid),
        ipc=runflags.parse_host_namespace("--ipc", args.ipc),
        cpu_shares=args.cpu_shares,
        cpuset_cpus=runflags.parse_cpuset(args.cpuset_cpus) if args.cpuset_cpus else "",
        memory_swap=runflags.parse_memory_swap(args.memory_swap),
        no_new_privileges=no_new_privileges[-1] if no_new_privileges else None,
        init=runflags.find_init() if args.init else "")


def stop_labels_from(args: argparse.Namespace) -> dict[str, str]:
    """--stop-signal and --stop-timeout as the labels `dock stop` reads (the signal's is containerd's)."""
    labels: dict[str, str] = {}
    if args.stop_signal:
        labels[STOP_SIGNAL_LABEL] = signal_name(args.stop_signal)
    if args.stop_timeout is not None:
        labels[STOP_TIMEOUT_LABEL] = str(args.stop_timeout)
    return labels


def restart_labels_from(args: argparse.Namespace) -> dict[str, str]:
    """`--restart POLICY` as containerd's restart labels (dockyard_common/restartpolicy.py)."""
    policy = restartpolicy.parse(args.restart)
    if policy.restarts and getattr(args, "rm", False):
        raise InvalidArgument("conflicting options: --restart and --rm (a container removed when it exits "
                              "cannot be restarted)")
    return restartpolicy.labels_for(policy)


async def run_command(client: Client, args: argparse.Namespace) -> int:
    try:
        streams = parse_attach(args.attach)
        check_attach(streams, detach=args.detach)
    except InvalidArgument as exc:
        raise SystemExit(f"dock: {exc}") from None
    req = request_from_args(args)
    if args.name:
        await check_name_free(client, req.id)
    with cidfile.written(args.cidfile, req.id), shown_fds(streams) as (out_fd, err_fd):
        return await run(client, req, out_fd=out_fd, err_fd=err_fd)
