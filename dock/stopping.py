"""How `dock stop` stops a container: the signal first, then SIGKILL after a timeout. Both can be
set per container at `run`/`create` time (Docker's --stop-signal, --stop-timeout), kept as labels:
the signal under containerd's image stop-signal label (what `ctr` and the daemon's restart monitor
read), the timeout under ours."""

from __future__ import annotations

import signal

from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import STOP_SIGNAL_LABEL

STOP_TIMEOUT_LABEL = "dockyard.stop-timeout"
DEFAULT_STOP_TIMEOUT = 10  # seconds, as Docker's


def signal_number(text: str) -> int:
    """`SIGKILL`, `KILL`, `kill` or `9`."""
    if text.isdigit():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise InvalidArgument(f"invalid signal {text!r}")
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal {text!r}") from None


def signal_name(text: str) -> str:
    """The label's spelling of a signal: `SIGHUP` for hup, HUP or 1 (a number with no name stays one)."""
    number = signal_number(text)
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def stop_timeout(labels: dict[str, str], given: int | None) -> int:
    """`given` (-t), else the container's --stop-timeout, else Docker's 10 s; negative waits for ever."""
    if given is not None:
        return given
    try:
        return int(labels.get(STOP_TIMEOUT_LABEL, DEFAULT_STOP_TIMEOUT))
    except ValueError:  # another client's label: the default
        return DEFAULT_STOP_TIMEOUT


__all__ = ["DEFAULT_STOP_TIMEOUT", "STOP_SIGNAL_LABEL", "STOP_TIMEOUT_LABEL", "signal_name", "signal_number",
           "stop_timeout"]
