"""Binding dax devices to drivers: the writes, their quirks, and their side effects.

Facts this module is built on (drivers/dax/bus.c ``new_id``/``remove_id``/``do_id_store``,
drivers/base/dd.c; the fsdev_dax driver is drivers/dax/fsdev.c of the "dax: add fsdev.c driver
for fs-dax on character dax" patch, V10 3/8, 2026-03):

* unbind is ``remove_id`` then ``unbind`` on the current driver: without ``remove_id`` a later
  ``new_id`` of another device would bind this one again;
* ``new_id`` adds the name to the driver's id list and runs ``driver_attach()``, which probes
  *every* unbound device the driver matches, so it can bind devices nobody asked for;
* fsdev_dax matches only through its id list (fsdev patch V10 leaves bus.c alone), so a bind
  always starts with ``new_id``; ``bind`` is written only if ``new_id`` did not bind the device;
* probe and remove are synchronous, but udev creates ``/dev`` nodes asynchronously.

Each primitive has an ``*_actions`` twin that returns exactly the writes it would make, which
is what ``--dry-run`` prints.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

from daxmode.errors import KernelRefused, SysfsError
from daxmode.kernel import events, paths
from daxmode.kernel.devices import bus_device_names, driver_of
from daxmode.kernel.memory import Write
from daxmode.sysfs import Sysfs


class Action(NamedTuple):
    """One planned kernel interaction: a sysfs write, or loading a module."""

    kind: str  # "write" | "modprobe"
    path: str  # relative to the root ("" for modprobe)
    value: str
    note: str = ""

    def render(self) -> str:
        tail = f"  # {self.note}" if self.note else ""
        if self.kind == "modprobe":
            return f"modprobe {self.value}{tail}"
        return f"write {self.value!r} > /{self.path}{tail}"

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "value": self.value}
        if self.path:
            out["path"] = "/" + self.path
        if self.note:
            out["note"] = self.note
        return out


def loaded(sysfs: Sysfs, driver: str) -> bool:
    return sysfs.is_dir(paths.driver_dir(driver))


def load(sysfs: Sysfs, driver: str) -> None:
    """modprobe the driver's module (the hook's when simulated); KernelRefused with modprobe's reason."""
    if sysfs.hook is not None:
        try:
            sysfs.hook.modprobe(sysfs, driver)
        except OSError as e:
            raise KernelRefused(f"modprobe {driver} failed: {e.strerror or e}") from None
        return
    import subprocess  # only when a module is missing: keeps every command's start-up short

    try:
        proc = subprocess.run(["modprobe", driver], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KernelRefused(f"modprobe {driver} failed: modprobe not found") from None
    if proc.returncode != 0:
        err = proc.stderr.strip()
        raise KernelRefused(f"modprobe {driver} failed: {err.splitlines()[-1] if err else proc.returncode}")


def unbound_devices(sysfs: Sysfs) -> set[str]:
    return {n for n in bus_device_names(sysfs) if driver_of(sysfs, n) is None}


def bound_to(sysfs: Sysfs, driver: str) -> set[str]:
    return {n for n in bus_device_names(sysfs) if driver_of(sysfs, n) == driver}


# --- unbind ----------------------------------------------------------------------------------


def unbind_actions(name: str, driver: str) -> list[Action]:
    return [
        Action("write", paths.driver_attr(driver, "remove_id"), name),
        Action("write", paths.driver_attr(driver, "unbind"), name),
    ]


def unbind(sysfs: Sysfs, write: Write, name: str, driver: str, timeout: float = 10.0) -> None:
    """``remove_id`` + ``unbind`` and wait for the link to go.  The caller checks first that
    unbinding is safe (kmem with blocks online would leak the range until reboot)."""
    cur = driver_of(sysfs, name)
    if cur != driver:
        raise KernelRefused(f"{name} is bound to {cur or 'no driver'}, not {driver}")
    remove_id, unbind_ = unbind_actions(name, driver)
    write(remove_id.path, name)
    try:
        write(unbind_.path, name)
    except SysfsError as e:
        if driver_of(sysfs, name) is not None:
            raise KernelRefused(f"could not unbind {name} from {driver}: {e}") from None
    events.wait_driver(sysfs, name, None, timeout)


def remove_id(write: Write, name: str, driver: str) -> None:
    """Drop ``name`` from a driver's id list (never unbinds; succeeds if absent)."""
    write(paths.driver_attr(driver, "remove_id"), name)


# --- bind ------------------------------------------------------------------------------------


def bind_actions(name: str, driver: str, *, is_loaded: bool) -> list[Action]:
    acts = [] if is_loaded else [Action("modprobe", "", driver, "driver directory missing")]
    return [
        *acts,
        Action("write", paths.driver_attr(driver, "new_id"), name),
        Action("write", paths.driver_attr(driver, "bind"), name, "only if new_id did not bind it"),
    ]


class BindResult(NamedTuple):
    side_effects: list[str]
    """Devices unbound before that ``new_id``'s driver_attach bound to this driver."""


def bind(sysfs: Sysfs, write: Write, name: str, driver: str, timeout: float = 10.0) -> BindResult:
    """Load the module if needed, ``new_id``, ``bind`` if still unbound, wait for the link.

    Call it under the bus lock (daxmode.runstate.locks.bus_lock): the side-effect accounting compares the
    unbound devices before and after, which another run binding at the same time would falsify.
    On failure the id entry is left for the caller's cleanup (:func:`remove_id`)."""
    if not loaded(sysfs, driver):
        load(sysfs, driver)
    before = unbound_devices(sysfs) - {name}
    if driver_of(sysfs, name) != driver:
        with contextlib.suppress(SysfsError):  # refused for a matching device on some kernels: bind decides
            write(paths.driver_attr(driver, "new_id"), name)
    if driver_of(sysfs, name) != driver:
        try:
            write(paths.driver_attr(driver, "bind"), name)
        except SysfsError as e:
            if driver_of(sysfs, name) != driver:
                raise KernelRefused(f"could not bind {name} to {driver}: {e}") from None
    events.wait_driver(sysfs, name, driver, timeout)
    return BindResult(sorted(n for n in before if driver_of(sysfs, n) == driver))


def wait_node(sysfs: Sysfs, name: str, timeout: float = 10.0) -> None:
    """``/dev/daxX.Y`` exists (udev may create it after the bind)."""
    if not sysfs.exists(paths.dev_node(name)):
        events.wait_node(sysfs, name, True, timeout)
