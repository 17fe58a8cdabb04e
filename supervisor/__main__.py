"""dockyardd: the only place that installs uvloop, configures logging and parses flags."""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
from pathlib import Path

from dockyard_common.errors import DockyardError, error_text
from supervisor import config as configmod


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc's and hpack's own debug lines (several per call) drown ours; warnings still come through
    for noisy in ("grpc", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def raise_open_files_limit() -> str | None:
    """The soft RLIMIT_NOFILE up to the hard one (as Go's runtime does for containerd at its
    start): the daemon holds ~3 descriptors a running container, so the usual soft 1024 ran
    out at ~330. Containers get theirs from their spec. What went wrong, for a warning, or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel takes at most fs.nr_open
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            return None
    if soft != resource.RLIM_INFINITY and soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        return f"open files limit stays {soft} (raising it to {target}: {error_text(exc)})"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dockyardd", description="The Dockyard container supervisor.")
    p.add_argument("--root", type=Path, help="persistent state (default /var/lib/dockyard)")
    p.add_argument("--state", type=Path, help="runtime state (default /run/dockyard)")
    p.add_argument("--address", type=Path, help="gRPC unix socket (default <state>/dockyard.sock)")
    p.add_argument("--config", type=Path, help=f"TOML config file (default {configmod.DEFAULT_CONFIG})")
    p.add_argument("--log-level", choices=configmod.LOG_LEVELS)
    p.add_argument("--log-format", choices=configmod.LOG_FORMATS)
    p.add_argument("--default-network", metavar="NAME|none",
                   help="the network `dock run` joins without --net (default dockyard, made on first use); "
                        "none: no default network")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = configmod.load(args.config, {
            "root": args.root, "state": args.state, "address": args.address,
            "log_level": args.log_level, "log_format": args.log_format, "default_network": args.default_network,
        })
    except configmod.ConfigError as exc:
        print(f"dockyardd: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, cfg.log_format)
    problem = raise_open_files_limit()
    if problem:
        logging.getLogger("dockyard").warning("%s", problem)

    import uvloop

    from supervisor.server import serve

    try:
        uvloop.run(serve(cfg))
    except DockyardError as exc:
        logging.getLogger("dockyard").error("cannot start: %s", exc)
        return 1
    except OSError as exc:
        logging.getLogger("dockyard").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
