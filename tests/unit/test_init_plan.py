"""The container init's step order (shim.init.plan) and mount option parsing — no root needed."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument
from dockyard_common.mountopts import parse_mount_options, statvfs_to_ms
from shim.init import plan as P
from shim.init.spec import Spec, default_spec, parse_process, parse_spec

BUNDLE = "/run/dockyard/tasks/default/c1"


def make_spec(userns: bool = False, **linux: Any) -> Spec:
    s = default_spec()
    s["process"]["terminal"] = False
    if userns:
        s["linux"]["namespaces"].append({"type": "user"})
        s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    s["linux"].update(linux)
    return parse_spec(s)


def names(steps: tuple[P.Step, ...]) -> list[str]:
    return [s.name for s in steps]


def index(steps: tuple[P.Step, ...], cls: type[P.Step]) -> int:
    return next(i for i, s in enumerate(steps) if isinstance(s, cls))


def test_plain_container_order() -> None:
    plan = P.plan_create(make_spec(), BUNDLE, has_rootfs_mounts=True)
    assert names(plan.stage1) == ["ArrangeFds", "AwaitCgroup", "SetRlimits", "Unshare", "SetPropagation",
                                  "MountRootfs", "ForkInit"]
    unshare = plan.stage1[3]
    assert isinstance(unshare, P.Unshare)
    assert set(unshare.types) == {"pid", "network", "ipc", "uts", "mount"}
    assert unshare.flags == L.CLONE_NEWPID | L.CLONE_NEWNET | L.CLONE_NEWIPC | L.CLONE_NEWUTS | L.CLONE_NEWNS
    init = names(plan.init)
    assert init[:4] == ["AwaitContinue", "Setsid", "SetPropagation", "BindRootfs"]
    assert init[-2:] == ["AwaitStart", "Exec"]
    # mounts in the spec's order, then devices, then the root switch
    mounts = [s for s in plan.init if isinstance(s, P.MountSpec)]
    assert [m.mount.destination for m in mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                                                     "/sys", "/sys/fs/cgroup"]
    assert index(plan.init, P.CreateDevices) > init.index("MountSpec")
    assert index(plan.init, P.PivotRoot) > index(plan.init, P.DevSymlinks)
    # runc's finalize order after the pivot
    order = ["PivotRoot", "ReadonlyRoot", "SetHostname", "LoopbackUp", "ReadonlyPath", "MaskPath",
             "NoNewPrivs", "DropBoundingSet", "SetUser", "SetCapabilities", "SetUmask", "Chdir",
             "LookupExecutable", "AwaitStart", "Exec"]
    positions = [init.index(n) for n in order]
    assert positions == sorted(positions)
    assert init.count("MaskPath") == 10 and init.count("ReadonlyPath") == 5


def test_user_namespace_comes_first_and_owns_the_others() -> None:
    plan = P.plan_create(make_spec(userns=True), BUNDLE, has_rootfs_mounts=True)
    steps = names(plan.stage1)
    assert steps == ["ArrangeFds", "AwaitCgroup", "SetRlimits",
                     "Unshare", "SetPropagation", "MountRootfs",  # transient mount ns, host privileges
                     "Unshare", "MapIds", "BecomeRoot",  # the user namespace and its maps
                     "Unshare", "ForkInit"]  # everything else, owned by the user namespace
    first, user, rest = (s for s in plan.stage1 if isinstance(s, P.Unshare))
    assert first.types == ("mount",) and user.types == ("user",)
    assert "user" not in rest.types and "mount" in rest.types
    mapids = plan.stage1[7]
    assert isinstance(mapids, P.MapIds) and mapids.uid_mappings[0].host_id == 100000
    assert not mapids.deny_setgroups
    devices = next(s for s in plan.init if isinstance(s, P.CreateDevices))
    assert devices.bind_from_host  # mknod is refused in a user namespace


def test_rootless_denies_setgroups() -> None:
    plan = P.plan_create(make_spec(userns=True), BUNDLE, has_rootfs_mounts=False, rootless=True)
    mapids = next(s for s in plan.stage1 if isinstance(s, P.MapIds))
    assert mapids.deny_setgroups
    setuser = next(s for s in plan.init if isinstance(s, P.SetUser))
    assert not setuser.setgroups
    assert "MountRootfs" not in names(plan.stage1)


def test_no_rootfs_mounts_no_transient_namespace() -> None:
    plan = P.plan_create(make_spec(userns=True), BUNDLE, has_rootfs_mounts=False)
    assert next(s.types for s in plan.stage1 if isinstance(s, P.Unshare)) == ("user",)


@pytest.mark.parametrize("userns", [False, True])
def test_the_cgroup_join_comes_before_any_namespace_or_mount(userns: bool) -> None:
    """Namespaces and mounts made before the join would charge their kernel memory to the
    shim's cgroup, not the container's."""
    plan = P.plan_create(make_spec(userns=userns), BUNDLE, has_rootfs_mounts=True)
    first_kernel_object = min(i for i, s in enumerate(plan.stage1)
                              if isinstance(s, P.Unshare | P.MountRootfs | P.JoinNamespace))
    assert index(plan.stage1, P.AwaitCgroup) < first_kernel_object


def test_cgroup_namespace_is_unshared_after_the_cgroup_join() -> None:
    s = make_spec(namespaces=[{"type": t} for t in ("pid", "mount", "cgroup", "uts")])
    plan = P.plan_create(s, BUNDLE, has_rootfs_mounts=False)
    unshare = next(i for i, st in enumerate(plan.stage1) if isinstance(st, P.Unshare) and "cgroup" in st.types)
    assert index(plan.stage1, P.AwaitCgroup) < unshare < index(plan.stage1, P.ForkInit)


def test_joined_namespaces_user_first_mount_last() -> None:
    s = make_spec(namespaces=[{"type": "mount", "path": "/proc/9/ns/mnt"}, {"type": "network", "path": "/x/net"},
                              {"type": "user", "path": "/proc/9/ns/user"}, {"type": "pid"}, {"type": "uts"}])
    plan = P.plan_create(s, BUNDLE, has_rootfs_mounts=False)
    joins = [(st.type, st.path) for st in plan.stage1 if isinstance(st, P.JoinNamespace)]
    assert joins == [("user", "/proc/9/ns/user"), ("network", "/x/net"), ("mount", "/proc/9/ns/mnt")]
    steps = names(plan.stage1)
    assert steps.index("BecomeRoot") > steps.index("JoinNamespace")
    assert "MapIds" not in steps
    assert "LoopbackUp" not in names(plan.init)  # a joined network namespace is left alone


def test_rlimits_and_oom_before_any_namespace() -> None:
    s = default_spec()
    s["process"]["oomScoreAdj"] = -500
    s["linux"]["namespaces"].append({"type": "user"})
    s["linux"]["uidMappings"] = s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1, "size": 1}]
    plan = P.plan_create(parse_spec(s), BUNDLE, has_rootfs_mounts=False)
    steps = names(plan.stage1)
    assert steps.index("SetRlimits") < steps.index("Unshare")
    assert steps.index("SetOomScoreAdj") < steps.index("Unshare")


ALLOW_BUT_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}


def test_seccomp_is_the_last_step_before_start() -> None:
    s = make_spec(seccomp=ALLOW_BUT_MKDIR)
    assert s.process is not None and s.process.no_new_privileges
    init = names(P.plan_create(s, BUNDLE, has_rootfs_mounts=False).init)
    assert init[-3:] == ["Seccomp", "AwaitStart", "Exec"]
    assert init.index("LookupExecutable") < init.index("Seccomp")


def test_seccomp_without_no_new_privs_loads_while_still_privileged() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    d["process"]["noNewPrivileges"] = False
    d["linux"]["seccomp"] = ALLOW_BUT_MKDIR
    init = names(P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init)
    assert "NoNewPrivs" not in init
    assert init.index("MaskPath") < init.index("Seccomp") < init.index("DropBoundingSet")


def test_bad_seccomp_profile_fails_the_plan() -> None:
    with pytest.raises(InvalidArgument, match="SCMP_ACT_NOTIFY"):
        P.plan_create(make_spec(seccomp={"defaultAction": "SCMP_ACT_NOTIFY"}), BUNDLE, has_rootfs_mounts=False)


def test_terminal_opens_a_console_after_the_pivot() -> None:
    d = default_spec()
    d["process"]["consoleSize"] = {"height": 30, "width": 100}
    init = P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init
    console = next(s for s in init if isinstance(s, P.OpenConsole))
    assert console.size == (30, 100)
    assert index(init, P.PivotRoot) < index(init, P.OpenConsole) < index(init, P.SetUser)


def test_capability_sets() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    d["process"]["capabilities"] = {"bounding": ["CAP_KILL", "CAP_CHECKPOINT_RESTORE"], "effective": ["CAP_KILL"],
                                    "permitted": ["CAP_KILL"], "inheritable": [], "ambient": ["CAP_KILL"]}
    init = P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False, last_cap=39).init
    bounding = next(s for s in init if isinstance(s, P.DropBoundingSet))
    assert bounding.keep == {5}  # CAP_CHECKPOINT_RESTORE (40) is beyond this kernel: skipped
    caps = next(s for s in init if isinstance(s, P.SetCapabilities))
    assert caps.effective == caps.permitted == caps.ambient == {5} and not caps.inheritable


def test_no_capabilities_object_drops_everything() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    del d["process"]["capabilities"]
    init = P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init
    assert next(s for s in init if isinstance(s, P.DropBoundingSet)).keep == frozenset()
    caps = next(s for s in init if isinstance(s, P.SetCapabilities))
    assert not (caps.effective or caps.permitted or caps.inheritable or caps.ambient)


def test_mount_kinds_and_bind_sources() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    d["mounts"] += [
        {"destination": "/data", "type": "bind", "source": "data", "options": ["ro", "rprivate"]},
        {"destination": "/etc/hosts", "type": "none", "source": "/etc/hosts", "options": ["rbind", "nosuid"]},
    ]
    init = P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init
    mounts = {s.mount.destination: s for s in init if isinstance(s, P.MountSpec)}
    assert mounts["/proc"].kind == "fs" and mounts["/proc"].source == "proc"
    assert mounts["/sys/fs/cgroup"].kind == "cgroup"
    data = mounts["/data"]
    assert data.kind == "bind" and data.source == f"{BUNDLE}/data"  # relative to the bundle
    assert data.options.flags & L.MS_RDONLY and data.options.propagation == (L.MS_PRIVATE | L.MS_REC,)
    hosts = mounts["/etc/hosts"]
    assert hosts.kind == "bind" and hosts.options.recursive and hosts.source == "/etc/hosts"


def test_bound_dev_skips_device_creation() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    d["mounts"][1] = {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}
    init = names(P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init)
    assert "CreateDevices" not in init and "DevSymlinks" not in init


def test_spec_devices_override_defaults() -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    d["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
                             {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    init = P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False).init
    devices = {dev.path: dev for dev in next(s for s in init if isinstance(s, P.CreateDevices)).devices}
    assert devices["/dev/null"].file_mode == 0o600
    assert "/dev/fuse" in devices and "/dev/tty" in devices


def test_shared_root_propagation_is_reapplied_after_pivot() -> None:
    init = P.plan_create(make_spec(rootfsPropagation="rshared"), BUNDLE, has_rootfs_mounts=False).init
    props = [i for i, s in enumerate(init) if isinstance(s, P.SetPropagation)]
    assert len(props) == 2 and props[1] > index(init, P.PivotRoot)
    assert all(s.flags == L.MS_SHARED | L.MS_REC for s in init if isinstance(s, P.SetPropagation))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.pop("process"), "process: missing"),
        (lambda d: (d.pop("hostname"), d["linux"].update(namespaces=[{"type": "pid"}])),
         "a mount namespace is required"),
        (lambda d: d["mounts"].append({"destination": "/x", "type": "bind"}), "needs a source"),
        (lambda d: d["mounts"].append({"destination": "/x", "source": "/y"}), "needs a type"),
        (lambda d: d["mounts"].append({"destination": "/x", "type": "bind", "source": "/y", "options": ["idmap"]}),
         "not supported"),
    ],
)
def test_unrunnable_specs(change: Any, fragment: str) -> None:
    d = default_spec()
    d["process"]["terminal"] = False
    change(d)
    with pytest.raises(InvalidArgument, match=fragment):
        P.plan_create(parse_spec(d), BUNDLE, has_rootfs_mounts=False)


def test_relative_bundle_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="not an absolute path"):
        P.plan_create(make_spec(), "bundle", has_rootfs_mounts=False)


def test_rootfs_path() -> None:
    assert P.rootfs_path(BUNDLE, make_spec()) == f"{BUNDLE}/rootfs"
    d = default_spec()
    d["root"]["path"] = "/srv/root/../rootfs"
    assert P.rootfs_path(BUNDLE, parse_spec(d)) == "/srv/rootfs"


def test_exec_plan() -> None:
    process = parse_process({"args": ["sh"], "cwd": "/", "user": {"uid": 1000, "gid": 1000}, "terminal": True,
                             "noNewPrivileges": True})
    plan = P.plan_exec(process, 4242, seccomp=ALLOW_BUT_MKDIR)
    assert names(plan.stage1) == ["ArrangeFds", "AwaitCgroup", "JoinContainer", "ForkInit"]
    join = plan.stage1[2]
    assert isinstance(join, P.JoinContainer) and join.pid == 4242
    init = names(plan.init)
    assert init[:3] == ["AwaitContinue", "Setsid", "OpenConsole"]
    assert init[-3:] == ["Seccomp", "AwaitStart", "Exec"]
    assert "PivotRoot" not in init and "MountSpec" not in init
    with pytest.raises(InvalidArgument):
        P.plan_exec(process, 0)


def test_every_step_says_why() -> None:
    plan = P.plan_create(make_spec(userns=True, seccomp=ALLOW_BUT_MKDIR, sysctl={"a.b": "1"}), BUNDLE,
                         has_rootfs_mounts=True)
    for step in (*plan.stage1, *plan.init):
        assert step.why, step.name


# ----- mount options -----------------------------------------------------------------------------


def test_mount_options() -> None:
    o = parse_mount_options(["nosuid", "noexec", "nodev", "mode=755", "size=65536k", "ro"])
    assert o.flags == L.MS_NOSUID | L.MS_NOEXEC | L.MS_NODEV | L.MS_RDONLY
    assert o.data == "mode=755,size=65536k"
    assert not o.is_bind and o.propagation == ()
    b = parse_mount_options(["rbind", "rw", "rslave", "tmpcopyup"])
    assert b.is_bind and b.recursive and not b.flags & L.MS_RDONLY
    assert b.propagation == (L.MS_SLAVE | L.MS_REC,)
    assert b.remount_flags() == 0 and b.data == ""
    assert parse_mount_options(["ro", "rw"]).flags == 0
    assert parse_mount_options(["nosuid", "suid"]).flags == 0
    assert parse_mount_options(["bind", "ro"]).remount_flags() == L.MS_RDONLY
    overlay = parse_mount_options(["lowerdir=/a:/b", "upperdir=/u", "workdir=/w", "index=off"])
    assert overlay.flags == 0 and overlay.data == "lowerdir=/a:/b,upperdir=/u,workdir=/w,index=off"
    with pytest.raises(InvalidArgument, match="'idmap' is not supported"):
        parse_mount_options(["idmap"])


def test_statvfs_flags() -> None:
    assert statvfs_to_ms(0x1 | 0x2 | 0x8) == L.MS_RDONLY | L.MS_NOSUID | L.MS_NOEXEC
    assert statvfs_to_ms(0x1000) == L.MS_RELATIME


def test_a_joined_user_namespace_is_joined_after_the_rootfs_is_mounted() -> None:
    """A pod's container joins the pod's user namespace by path: the other namespaces (a network
    namespace the daemon owns) and the snapshot's mounts (ID-mapped clones need the host's
    privilege) come first, as host root; then the user namespace; then the container's own."""
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["hostname"] = ""  # the pod's UTS namespace is joined
    spec["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "ipc", "path": "/proc/1/ns/ipc"},
                                   {"type": "network", "path": "/run/netns/pod"},
                                   {"type": "user", "path": "/proc/1/ns/user"}]
    spec["linux"]["uidMappings"] = spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000,
                                                                   "size": 65536}]
    plan = P.plan_create(parse_spec(spec), BUNDLE, has_rootfs_mounts=True)
    joins = [(s.type, i) for i, s in enumerate(plan.stage1) if isinstance(s, P.JoinNamespace)]
    assert [t for t, _ in joins] == ["ipc", "network", "user"]
    user_at = joins[-1][1]
    assert index(plan.stage1, P.MountRootfs) < user_at < index(plan.stage1, P.BecomeRoot)
    first, own = (s for s in plan.stage1 if isinstance(s, P.Unshare))
    assert first.types == ("mount",) and index(plan.stage1, P.Unshare) < index(plan.stage1, P.MountRootfs)
    assert set(own.types) == {"pid", "mount"} and plan.stage1.index(own) > user_at
    assert not any(isinstance(s, P.MapIds) for s in plan.stage1)  # the namespace's maps are its own


def test_a_joined_user_namespace_without_rootfs_mounts_is_joined_first() -> None:
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["hostname"] = ""
    spec["linux"]["namespaces"] = [{"type": "mount"}, {"type": "user", "path": "/proc/1/ns/user"},
                                   {"type": "network", "path": "/run/netns/x"}]
    plan = P.plan_create(parse_spec(spec), BUNDLE, has_rootfs_mounts=False)
    joins = [s.type for s in plan.stage1 if isinstance(s, P.JoinNamespace)]
    assert joins == ["user", "network"]
    assert not any(isinstance(s, P.MountRootfs) for s in plan.stage1)
