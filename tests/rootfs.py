"""Build a tiny root filesystem from Debian's busybox-static, for container tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"

# Applets the tests use; `all_applets=True` links every applet busybox has.
APPLETS = ("sh", "echo", "cat", "ls", "hostname", "id", "sleep", "mount", "ps", "ip", "true", "false", "stat",
           "readlink", "grep", "head", "wc", "env", "pwd", "touch", "mkdir", "test", "[", "kill", "wc", "printf",
           "tr", "cut", "umount", "uname", "dd", "od", "xxd", "rm", "ln")


def make_busybox_rootfs(path: str | os.PathLike[str], *, all_applets: bool = False) -> Path:
    """Populate `path` (created if missing) with busybox, applet links in /bin, and the
    directories and /etc files a container expects. Returns the path."""
    root = Path(path)
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "home/user", "usr/bin", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets: list[str] = list(APPLETS)
    if all_applets:
        out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
        applets = out.split()
    for name in dict.fromkeys(applets):
        link = root / "bin" / name
        if not link.exists() and name != "busybox":
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n")
    (root / "etc" / "hostname").write_text("busybox\n")
    return root


def write_bundle(bundle: str | os.PathLike[str], spec: dict[str, Any]) -> Path:
    """Write `spec` as <bundle>/config.json (the bundle dir is created if missing)."""
    b = Path(bundle)
    b.mkdir(parents=True, exist_ok=True)
    (b / "config.json").write_text(json.dumps(spec, indent=2))
    return b
