"""An event-printing CLI (`ctr events`, `dock --format json events`) read in the background.

Lines arrive in a thread. The log is ready only once the subscription is live: it labels a
namespace through the real `ctr` (an /namespaces/update event) until such an event is printed,
so nothing the test does afterwards can be missed; no sleeping and hoping. (The daemon says when
a subscription is live, in its headers, but a CLI under test prints only events: the real `ctr`
cannot tell us. In-process tests use tests/daemon.py `subscribed` or `client.events.subscribed`.)"""

from __future__ import annotations

import contextlib
import itertools
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence

from tests.ctr import ctr, ok
from tests.waiting import wait_until


class EventLog:
    def __init__(self, argv: Sequence[str], address: str, namespace: str = "default",
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []  # every line taken so far, in order
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self._subscribed(address, namespace)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _subscribed(self, address: str, namespace: str) -> None:
        probes = itertools.count()
        ctr(address, "namespaces", "create", namespace)  # to label it; AlreadyExists is as good

        def an_update_arrived() -> bool:
            ok(ctr(address, "namespaces", "label", namespace, f"dockyard.test/probe={next(probes)}"))
            with contextlib.suppress(queue.Empty):
                while True:
                    line = self.lines.get(timeout=0.2)
                    self.seen.append(line)
                    if "/namespaces/update" in line:
                        return True
            return False

        wait_until(an_update_arrived, 30, what="the event subscriber to see an event", interval=0)
        ok(ctr(address, "namespaces", "label", namespace, "dockyard.test/probe="))  # the label goes again

    def until(self, done: Callable[[list[str]], bool], timeout: float = 30, what: str = "the events") -> list[str]:
        """Take lines until `done(all lines so far)` holds; returns all lines so far."""
        def reached() -> bool:
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=0.1))
            return done(self.seen)

        wait_until(reached, timeout, what=what, interval=0)
        return self.seen

    def task_topics(self, cid: str, until: str, timeout: float = 30) -> list[str]:
        """`ctr events` lines: the /tasks/ topics of `cid` in order, once `until` is among them."""
        def topics(lines: list[str]) -> list[str]:
            return [f[5] for f in (line.split() for line in lines if cid in line)
                    if len(f) > 5 and f[5].startswith("/tasks/")]

        return topics(self.until(lambda lines: until in topics(lines), timeout, what=f"{until} of {cid}"))

    def close(self) -> None:
        """End the subscriber (SIGTERM: SIGINT may be ignored where the tests were started
        from a background job) and its reader."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)  # EOF once the subscriber is gone
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
