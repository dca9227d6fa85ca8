"""``daxmode list`` and ``daxmode set``: the mode manager's two commands."""

from __future__ import annotations

from typing import Any

import click

from daxmode.cli._common import TIMEOUT, State, complete_devices, echo_json, progress_bar, table, warn
from daxmode.errors import InvalidArgument
from daxmode.kernel.devices import DaxDevice, Mode, find_devices
from daxmode.kernel.memory import device_memory
from daxmode.runstate import journal
from daxmode.sizes import human
from daxmode.sysfs import Sysfs


def device_json(sysfs: Sysfs, dev: DaxDevice) -> dict[str, Any]:
    """daxctl list's device keys (daxmode mode names), plus the region."""
    if dev.legacy:
        return {"chardev": dev.name, "size": dev.size, "model": "legacy"}
    d: dict[str, Any] = {"chardev": dev.name, "size": dev.size}
    if dev.target_node >= 0:
        d["target_node"] = dev.target_node
    if dev.align > 0:
        d["align"] = dev.align
    d["mode"] = dev.mode.value if dev.mode else ("devdax" if dev.driver is None else f"unknown:{dev.driver}")
    if dev.mode is Mode.SYSTEM_RAM:
        mem = device_memory(sysfs, dev)
        if mem is None:
            d["needs_root"] = ["online_memblocks", "total_memblocks", "movable"]
        else:
            d["online_memblocks"] = len(mem.online)
            d["total_memblocks"] = len(mem.blocks)
            if mem.blocks and not mem.offline:
                d["movable"] = all(b.zones == "Movable" for b in mem.blocks)
    if dev.driver is None:
        d["state"] = "disabled"
    if dev.region is not None:
        r = dev.region
        reg: dict[str, Any] = {"id": r.id, "path": r.shown_path, "dynamic": r.dynamic}
        if r.size is not None:
            reg["size"] = r.size
        if r.available_size:
            reg["available_size"] = r.available_size
        if r.align is not None:
            reg["align"] = r.align
        d["region"] = reg
    return d


def _row(row: dict[str, Any]) -> tuple[str, ...]:
    if row.get("model") == "legacy":
        return (row["chardev"], "legacy model", human(row["size"]), "-", "-", "-", "-")
    mode = row["mode"] + (" (disabled)" if row.get("state") == "disabled" else "")
    mem = "-"
    if "online_memblocks" in row:
        mem = f"{row['online_memblocks']}/{row['total_memblocks']} online"
        if "movable" in row:
            mem += ", movable" if row["movable"] else ", not movable"
    elif "needs_root" in row:
        mem = "? (root)"
    reg = row.get("region", {})
    region = f"{reg.get('id', '?')} {'dynamic' if reg.get('dynamic') else 'static'}"
    node = str(row.get("target_node", "-"))
    align = human(row["align"]) if "align" in row else "-"
    return (row["chardev"], mode, human(row["size"]), node, align, mem, region)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON array with daxctl's keys plus region info.")
@click.argument("devices", nargs=-1, shell_complete=complete_devices)
@click.pass_obj
def list_cmd(st: State, as_json: bool, devices: tuple[str, ...]) -> None:
    """List dax devices (all, or the DEVICEs named: daxX.Y, /dev/daxX.Y or its sysfs path)."""
    sysfs = st.sysfs
    devs = find_devices(sysfs, list(devices) if devices else None)
    rows = [device_json(sysfs, d) for d in devs]
    for d in devs:
        intr = journal.interrupted(sysfs, d.name)
        if intr is not None:
            warn(f"{intr.describe()}; `daxmode set {d.name} MODE` repairs what it left")
    if as_json:
        echo_json(rows)
        return
    table([("DEVICE", "MODE", "SIZE", "NODE", "ALIGN", "MEMORY", "REGION"), *(_row(r) for r in rows)])
    if any("needs_root" in r for r in rows):
        click.echo("memory block counts need root: resource and mappingN are readable by root only", err=True)


@click.command("set")
@click.argument("device", shell_complete=complete_devices)
@click.argument("mode")
@click.option("--no-online", is_flag=True, help="system-ram: leave the memory blocks offline.")
@click.option("--no-movable", is_flag=True, help="system-ram: online as ZONE_NORMAL, not ZONE_MOVABLE.")
@click.option("--force", is_flag=True, help="Offline online memory when leaving system-ram.")
@click.option("--dry-run", is_flag=True, help="Print each planned sysfs write; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome (or plan) as JSON.")
@click.option(
    "--timeout", type=TIMEOUT, default=10.0, show_default=True, help="Seconds to wait for the kernel."
)
@click.pass_obj
def set_cmd(
    st: State,
    device: str,
    mode: str,
    no_online: bool,
    no_movable: bool,
    force: bool,
    dry_run: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Put DEVICE (daxX.Y, /dev/daxX.Y or its sysfs path) into MODE: devdax, fsdev (alias famfs)
    or system-ram."""
    from daxmode.modes import Options, set_mode

    target = Mode.parse(mode)
    if (no_online or no_movable) and target is not Mode.SYSTEM_RAM:
        raise InvalidArgument(f"--no-online/--no-movable only apply to system-ram, not {target}")
    with progress_bar(st) as bar:
        opts = Options(
            force=force,
            online=not no_online,
            movable=not no_movable,
            dry_run=dry_run,
            timeout=timeout,
            log=(lambda m: click.echo(m, err=True)) if st.verbose else None,
            progress=bar,
        )
        out = set_mode(st.sysfs, device, target, opts)
    for w in out.warnings:  # on stderr whatever the format; --json carries them too
        warn(w)
    if as_json:
        echo_json(out.to_json())
        return
    if dry_run:
        for line in out.plan.render():
            click.echo(line)
        return
    if not st.quiet:
        click.echo(out.summary())
