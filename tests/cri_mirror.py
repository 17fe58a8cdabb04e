"""An offline mirror of the public images Kubernetes' critest pulls, for a daemon in a test netns.

critest (../shared/tools/cri/critest) pulls images by their public names (registry.k8s.io,
gcr.io, ...). Here nothing outside is reachable, so this module builds look-alikes of them from
Debian's busybox-static (what each spec needs of its image: a web server on :80, a pid file, a
USER, ...; ../shared/tools/cri/README.md), pushes them into a docker-registry listening inside
the test's network namespace, under `<domain>/<repository>`, and writes the daemon's hosts.toml
files so that each domain is reached through that registry (a mirror with `override_path`).

    with pinned_netns() as ns, cri_mirror(ns, config_dir) as mirror:   # config_dir: the daemon's
        d = start_daemon(base=..., netns=ns)                              # certs.d/ goes there

Every name gets its own image (its own config, so its own digest) except where critest expects
one image under several names (`test-image-tags:1/2/3`; `pause:3.9` on two registries).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.images import Image, build_image, oci_archive, tar_tree
from tests.registry import RegistryProcess, start_registry
from tests.rootfs import make_busybox_rootfs

DOMAINS = ("registry.k8s.io", "k8s.gcr.io", "gcr.io", "docker.io", "public.ecr.aws")
STAGING = "gcr.io/k8s-staging-cri-tools"

# Tools the specs run that busybox-static lacks.
IPCS = "#!/bin/sh\n# ipcs -m: the System V shared memory segments of this IPC namespace\n" \
       "echo '------ Shared Memory Segments --------'\necho 'key        shmid      owner      perms      bytes'\n" \
       "tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read key shmid perms size rest; do\n" \
       "  echo \"$key $shmid root $perms $size\"\ndone\n"
# pgrep PATTERN as procps matches: the process name (comm), never pgrep itself.
PGREP = "#!/bin/sh\nfor p in /proc/[0-9]*; do\n  pid=${p#/proc/}\n  [ \"$pid\" = $$ ] && continue\n" \
        "  grep -q -- \"$1\" $p/comm 2>/dev/null && echo $pid\ndone\nexit 0\n"
# nginx look-alike: a script named nginx (so its process is "nginx" to pidof), "master process"
# in its command line, its pid in /var/run/nginx.pid, serving :80 until SIGTERM.
NGINX = "#!/bin/sh\nmkdir -p /var/run /www && echo nginx > /www/index.html && echo $$ > /var/run/nginx.pid\n" \
        "httpd -f -p 80 -h /www &\ntrap 'kill $!; exit 0' TERM INT\nwait\n"
HTTPD = "#!/bin/sh\n# httpd look-alike: serves :80 and logs a line naming itself\n" \
        "mkdir -p /www && echo 'It works!' > /www/index.html\necho 'httpd: AH00558 started, serving :80'\n" \
        "exec httpd -f -p 80 -h /www\n"
HOSTNET_NGINX = "#!/bin/sh\nmkdir -p /www && echo hostnet > /www/index.html\nexec httpd -f -p 12003 -h /www\n"


@dataclass
class Mirror:
    registry: RegistryProcess
    names: list[str]


def busybox_layer(tmp: Path, extra: dict[str, str] | None = None, *, users: str = "", groups: str = "") -> bytes:
    """A busybox root with every applet, ipcs and pgrep, and `extra` executable scripts."""
    root = make_busybox_rootfs(tmp / "rootfs", all_applets=True)
    for name, text in {"usr/bin/ipcs": IPCS, "usr/bin/pgrep": PGREP, **(extra or {})}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (root / "bin" / Path(name).name).unlink(missing_ok=True)  # the script, not busybox's applet
        path.write_text(text)
        path.chmod(0o755)
    if users:
        with open(root / "etc/passwd", "a") as f:
            f.write(users)
    if groups:
        with open(root / "etc/group", "a") as f:
            f.write(groups)
    return tar_tree(root)


NNP_C = b'#include <stdio.h>\n#include <unistd.h>\n' \
        b'int main(void) { printf("Effective uid: %d\\n", (int)geteuid()); return 0; }\n'


# pause: PID 1 of a pod, no child of its own (a shell's `sleep` would show in the pod's `pgrep
# sleep`), reaping the pod's orphans, gone on SIGTERM or SIGINT.
PAUSE_C = b"""#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void bye(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = bye; sigaction(SIGTERM, &sa, 0); sigaction(SIGINT, &sa, 0);
    sa.sa_handler = reap; sa.sa_flags = SA_NOCLDSTOP | SA_RESTART; sigaction(SIGCHLD, &sa, 0);
    for (;;) pause();
}
"""


def _static_program(tmp: Path, source: bytes, target: Path, mode: int) -> None:
    src = tmp / (target.name + ".c")
    src.write_bytes(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(target), str(src)], check=True, capture_output=True, timeout=120)
    target.chmod(mode)


def _nonewprivs(tmp: Path) -> bytes:
    """nonewprivs:1.3's program: setuid root, prints its effective uid (0 when the setuid bit
    took, the caller's uid under no_new_privs). A static C program: busybox drops setuid."""
    root = make_busybox_rootfs(tmp / "rootfs")
    _static_program(tmp, NNP_C, root / "usr/local/bin/nnp", 0o4755)
    return tar_tree(root)


def pause_layer(tmp: Path) -> bytes:
    root = tmp / "rootfs"
    _static_program(tmp, PAUSE_C, root / "pause", 0o755)
    return tar_tree(root)


def mirror_image(name: str, layer: bytes, config: dict[str, Any] | None = None) -> Image:
    # The name in a label: every image its own config digest (critest checks exact RepoTags).
    return build_image(name, [layer], {"Labels": {"io.dockyard.test.mirror": name}, **(config or {})})


def mirror_images(tmp: Path) -> list[Image]:
    """The look-alikes, one Image per name (several names may share one Image's blobs)."""
    def fresh(sub: str, extra: dict[str, str] | None = None, **kw: str) -> bytes:
        return busybox_layer(Path(tempfile.mkdtemp(prefix=f"{sub}-", dir=tmp)), extra, **kw)

    base = fresh("base")
    pause = pause_layer(Path(tempfile.mkdtemp(prefix="pause-", dir=tmp)))
    www = "www-data:x:33:33:www-data:/var/www:/bin/sh\n"
    images = [
        mirror_image("registry.k8s.io/e2e-test-images/busybox:1.29-2", base),
        mirror_image("public.ecr.aws/docker/library/busybox:1-uclibc", base),
        mirror_image("registry.k8s.io/pause:3.10", pause, {"Entrypoint": ["/pause"], "Cmd": None}),
        mirror_image("registry.k8s.io/pause:3.6", pause, {"Entrypoint": ["/pause"], "Cmd": None}),
        mirror_image("registry.k8s.io/e2e-test-images/nginx:1.14-2", fresh("nginx", {"usr/sbin/nginx": NGINX}),
               {"Cmd": ["/usr/sbin/nginx", "master process", "-g", "daemon off;"], "ExposedPorts": {"80/tcp": {}}}),
        mirror_image("registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
               fresh("httpd", {"usr/local/bin/httpd-foreground": HTTPD}),
               {"Cmd": ["/usr/local/bin/httpd-foreground"], "ExposedPorts": {"80/tcp": {}}}),
        mirror_image(f"{STAGING}/hostnet-nginx-amd64:latest", fresh("hostnet", {"usr/sbin/nginx": HOSTNET_NGINX}),
               {"Cmd": ["/usr/sbin/nginx"]}),
        # as cri-tools' image: uid 1000 (busybox root's `user`, its own group 1000) listed in group 50000
        mirror_image(f"{STAGING}/test-image-predefined-group:latest",
               fresh("group", groups="group-defined-in-image:x:50000:user\n"), {"User": "1000"}),
        mirror_image(f"{STAGING}/test-image-latest:latest", base),
        mirror_image(f"{STAGING}/test-image-tag:test", base),
        mirror_image(f"{STAGING}/test-image-tag:all", base),
        mirror_image(f"{STAGING}/test-image-1:latest", base),
        mirror_image(f"{STAGING}/test-image-2:latest", base),
        mirror_image(f"{STAGING}/test-image-3:latest", base),
        mirror_image(f"{STAGING}/test-image-user-uid:latest", base, {"User": "1002"}),
        mirror_image(f"{STAGING}/test-image-user-username:latest", fresh("www", users=www), {"User": "www-data"}),
        mirror_image(f"{STAGING}/test-image-user-uid-group:latest", base, {"User": "1003:1004"}),
        mirror_image(f"{STAGING}/test-image-user-username-group:latest", fresh("www2", users=www),
               {"User": "www-data:1004"}),
    ]
    images.append(mirror_image("registry.k8s.io/e2e-test-images/nonewprivs:1.3",
                         _nonewprivs(Path(tempfile.mkdtemp(prefix="nnp-", dir=tmp))),
                         {"Entrypoint": ["/usr/local/bin/nnp"], "Cmd": None}))
    tags = mirror_image(f"{STAGING}/test-image-tags:1", base)
    images += [tags, *(Image(f"{STAGING}/test-image-tags:{t}", tags.manifest, tags.config, tags.layers, tags.blobs)
                       for t in ("2", "3"))]
    pause39 = mirror_image("registry.k8s.io/pause:3.9", pause, {"Entrypoint": ["/pause"], "Cmd": None})
    images += [pause39, Image("k8s.gcr.io/pause:3.9", pause39.manifest, pause39.config, pause39.layers, pause39.blobs)]
    return images


def write_hosts(config_dir: Path, registry: RegistryProcess) -> None:
    """certs.d/<domain>/hosts.toml: every domain through the test registry, under <domain>/."""
    for domain in DOMAINS:
        d = config_dir / "certs.d" / domain
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "https://{domain}"\n\n[host."http://{registry.host}/v2/{domain}"]\n'
            '  capabilities = ["pull", "resolve"]\n  override_path = true\n')


def _push(netns: Path, registry: RegistryProcess, images: list[Image], tmp: Path) -> None:
    """skopeo, inside the namespace (the registry listens on its loopback), copies each image
    from an OCI archive to `<registry>/<domain>/<repository>:<tag>`, digests kept."""
    for i, image in enumerate(images):
        archive = tmp / f"image-{i}.tar"
        archive.write_bytes(oci_archive([image]))
        target = f"docker://{registry.host}/{image.name}"
        done = subprocess.run(["nsenter", f"--net={netns}", "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                               "--preserve-digests", f"oci-archive:{archive}", target],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"skopeo copy {image.name}: {done.stderr}"
        archive.unlink()


@contextlib.contextmanager
def cri_mirror(netns: Path, config_dir: Path) -> Iterator[Mirror]:
    """The look-alikes in a registry inside `netns`, and hosts.toml files in `config_dir`."""
    with tempfile.TemporaryDirectory(prefix="dy-crimirror-") as tmp, start_registry(netns=netns) as registry:
        images = mirror_images(Path(tmp))
        _push(netns, registry, images, Path(tmp))
        write_hosts(config_dir, registry)
        yield Mirror(registry, [image.name for image in images])
