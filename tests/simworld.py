"""Shared helpers for the mode-manager unit tests (simulated kernel)."""

from __future__ import annotations

from pathlib import Path

from daxmode import sim
from daxmode.modes import Mode, Options, set_mode
from daxmode.sysfs import Sysfs

DEV = "dax0.0"
BLOCKS = 4


def world(root: Path, *, auto_online: str = "offline", blocks: int = BLOCKS) -> tuple[sim.Sim, Sysfs]:
    s = sim.standard(root, auto_online=auto_online, blocks=blocks)
    return s, s.sysfs()


def put_in(s: sim.Sim, sysfs: Sysfs, mode: Mode | None, *, online: bool = True) -> None:
    """Bring dax0.0 into ``mode`` (None: unbound) as a starting point, then forget the log."""
    if mode is None:
        sysfs.write("sys/bus/dax/drivers/device_dax/remove_id", DEV)
        sysfs.write("sys/bus/dax/drivers/device_dax/unbind", DEV)
    elif mode is not Mode.DEVDAX:
        set_mode(sysfs, DEV, mode, Options(online=online))
    s.clear_log()


def check_sane(s: sim.Sim, allowed: set[str | None], start_online: bool | None = None) -> None:
    """The invariants no run may break: a known driver, no mixed blocks, nothing leaked."""
    drv = s.driver(DEV)
    assert drv in allowed, f"driver {drv} not in {allowed}"
    states = set(s.block_states(DEV).values())
    if drv == "kmem":
        assert len(states) == 1, f"mixed blocks: {s.block_states(DEV)}"
    else:
        assert not states, f"blocks present without kmem: {s.block_states(DEV)}"
    assert not s.leaked(), s.leaked()
    assert s.driver("dax1.1") is None, "side-effect binding of dax1.1 was not undone"
    assert s.driver("dax1.0") == "kmem"
    for drv_name in ("device_dax", "fsdev_dax", "kmem"):
        ids = s.ids(drv_name)
        assert ids in ([], [DEV]), (drv_name, ids)
        if ids:
            assert s.driver(DEV) == drv_name, f"stale new_id entry {DEV} on {drv_name}"
