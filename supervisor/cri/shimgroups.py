"""Which shim serves a pod: pods share shims, `pods_per_shim` to a shim.

Our shim is a CPython process: forked from the zygote, it keeps ~6 MiB of pages of its own
(reference counts written into shared objects copy their pages), twice a Go shim's. A shim per
pod (containerd's grouping) therefore costs twice containerd's memory per pod. Several pods per
shim share that cost; the price is a wider fault domain (a shim that dies takes its pods'
supervision with it, as a pod's shim takes its containers'), so the number is bounded and set
in the config (`[cri] pods_per_shim`; 1 gives each pod a shim of its own).

A pod's group is named on its sandbox record (label `GROUP_LABEL`) and in the sandbox's and its
containers' specs (containerd's runc shim annotation `io.containerd.runc.v2.group`, which the
shim launch contract, dockyard_common/shimlaunch.py, groups by). A new pod takes the first
group of its runtime with room: groups are refilled as pods leave, so shims stay few.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

GROUP_ANNOTATION = "io.containerd.runc.v2.group"  # what the shim launch contract groups by
GROUP_LABEL = "dockyard.cri.shim-group"  # on the sandbox record: the group its pod's shim serves
DEFAULT_PODS_PER_SHIM = 8
MAX_PODS_PER_SHIM = 64


def group_name(runtime: str, index: int) -> str:
    return f"{runtime}/pods-{index}"


def pick_group(runtime: str, taken: Iterable[str], pods_per_shim: int) -> str:
    """The group for a new pod of `runtime`, given the groups of the pods there are (one entry a
    pod): the first with fewer than `pods_per_shim` pods; "" when every pod has its own shim."""
    if pods_per_shim <= 1:
        return ""
    counts = Counter(taken)
    index = 0
    while counts[group_name(runtime, index)] >= pods_per_shim:
        index += 1
    return group_name(runtime, index)
