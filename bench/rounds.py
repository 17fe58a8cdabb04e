"""Cases taking turns, one sample each per round, and their medians and ratios.

    times = take_turns({"containerd": partial(once, a), "dockyardd": partial(once, b)}, rounds=5)
    results = report_times(times, width=26)              # prints "<case> median ... best ... (samples)"
    report_ratios(results, "containerd", ["dockyardd"])  # prints "<case> / containerd: 1.10x the time"
    fresh_sample(lambda: pull(a), lambda: check(a), lambda: remove(a))   # one sample into an empty store

Round-robin rather than all of one case then all of the other: the load of a shared host
drifts over minutes, and should land on every case alike, not on one daemon's runs only.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def take_turns(cases: Mapping[str, Callable[[], float]], rounds: int,
               *, flip: bool = False) -> dict[str, list[float]]:
    """Each case once per round, in the mapping's order (reversed on odd rounds with `flip`);
    a case returns its sample (seconds)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for i in range(rounds):
        for name in order[::-1] if flip and i % 2 else order:
            samples[name].append(cases[name]())
    return samples


def fresh_sample(transfer: Callable[[], object], images_check: Callable[[], str],
                 remove: Callable[[], object]) -> float:
    """Seconds `transfer` takes into an empty store; then `ctr images check` must call the
    image complete, and it is removed, so that the next sample starts empty too."""
    # Write back the previous sample's dirty pages first: on a small VM their writeback
    # otherwise lands in the next measurement, whichever daemon it belongs to.
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    transfer()
    took = time.perf_counter() - start
    check = images_check()
    assert "complete" in check and check.rstrip().endswith("true"), check
    remove()
    return took


def report_times(times: Mapping[str, list[float]], width: int) -> dict[str, dict[str, Any]]:
    """Median and best seconds per case, printed one line each."""
    results: dict[str, dict[str, Any]] = {}
    for name, runs in times.items():
        results[name] = {"median_s": statistics.median(runs), "best_s": min(runs)}
        print(f"{name:{width}s} median {statistics.median(runs):7.2f} s   best {min(runs):7.2f} s   "
              f"({' '.join(f'{t:.2f}' for t in runs)})", flush=True)
    return results


def report_ratios(results: dict[str, dict[str, Any]], base: str, cases: Iterable[str],
                  base_label: str = "") -> None:
    """Each case's median over `base`'s, stored as `time_over_containerd` and printed."""
    for name in cases:
        ratio = results[name]["median_s"] / results[base]["median_s"]
        results[name]["time_over_containerd"] = ratio
        print(f"{name} / {base_label or base}: {ratio:.2f}x the time", flush=True)
