"""Running the `dock` CLI against a test daemon, as a user would: a subprocess of this checkout.

    cli = DockCLI(d.address, tmp)
    cid = cli.ok("run", "-d", "--net", "none", "busybox", "sleep", "600").strip()
    cli.fails("rm", cid, words="is running")       # one clean line on stderr, no traceback
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemon import REPO


@dataclass
class DockCLI:
    address: str
    tmp: Path | None = None  # TMPDIR for dock (its FIFO dirs), so a test can check none is left

    def dock(self, *args: str, timeout: float = 90, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.address}
        env.pop("DOCK_DEBUG", None)  # the user's view: errors as one line, never a traceback
        if self.tmp is not None:
            env["TMPDIR"] = str(self.tmp)
        return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=REPO, input=input)

    def ok(self, *args: str, timeout: float = 90) -> str:
        res = self.dock(*args, timeout=timeout)
        assert res.returncode == 0, f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr, res.stderr
        return res.stdout

    def fails(self, *args: str, words: str, rc: int = 1) -> str:
        """stderr of a command that must fail with `rc` and clear words: `dock: ...` lines naming
        `words`, no traceback or Python exception names."""
        res = self.dock(*args)
        assert res.returncode == rc, f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
        err = res.stderr.strip()
        assert words in err, err
        assert all(line.startswith("dock: ") for line in err.splitlines()), err
        assert "Traceback" not in err and "Error:" not in err and "Exception" not in err, err
        return err

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--format", "json", *args))
