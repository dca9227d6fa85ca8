"""The ``daxmode`` command: parse, call the library, print.  Nothing else lives here.

Every :class:`~daxmode.errors.DaxmodeError` becomes one stderr line
``daxmode: <message>`` and its exit code; click usage errors exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from daxmode.device import DaxDevice, device_memory, find_devices, normalize_name
from daxmode.errors import DaxmodeError, InvalidArgument, SysfsError
from daxmode.modes import Mode, Options, set_mode
from daxmode.sysfs import Sysfs, open_root


class DaxmodeGroup(click.Group):
    """Maps library errors to one line and an exit code for every (sub)command.

    Command groups of other modules register *lazily* (:meth:`lazy`): they are imported only
    when a command this group does not know yet is asked for, or for help and completion.
    ``daxmode set`` then starts without importing famfs or ops code (python start-up is most
    of a transition's wall time in a TCG guest).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: list[Callable[[], None]] = []

    def lazy(self, register: Callable[[], None]) -> None:
        self._lazy.append(register)

    def _load_lazy(self) -> None:
        pending, self._lazy = self._lazy, []
        for register in pending:
            register()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and self._lazy:
            self._load_lazy()
            cmd = super().get_command(ctx, cmd_name)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_lazy()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DaxmodeError as e:
            click.echo(f"daxmode: {e}", err=True)
            ctx.exit(e.exit_code)


class _State:
    def __init__(self, root: str | None, verbose: int, quiet: bool) -> None:
        self.root = root
        self.verbose = verbose
        self.quiet = quiet
        self._sysfs: Sysfs | None = None

    @property
    def sysfs(self) -> Sysfs:
        if self._sysfs is None:
            self._sysfs = open_root(self.root)
        return self._sysfs


@click.group(cls=DaxmodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Act on the tree under DIR instead of / (tests, simulator). Default: $DAXMODE_ROOT or /.",
)
@click.option("-v", "--verbose", count=True, help="Print each sysfs write as it happens.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.version_option(package_name="daxmode")
@click.pass_context
def main(ctx: click.Context, root: str | None, verbose: int, quiet: bool) -> None:
    """Switch dax devices between devdax, fsdev (famfs) and system-ram, safely."""
    ctx.obj = _State(root, verbose, quiet)


# ---------------------------------------------------------------------------- list


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
        mem = device_memory(sysfs, dev, zones=True)
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


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.2f} {unit}"
    return f"{n} B"


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON array with daxctl's keys plus region info.")
@click.argument("devices", nargs=-1)
@click.pass_obj
def list_cmd(st: _State, as_json: bool, devices: tuple[str, ...]) -> None:
    """List dax devices (all, or the DEVICEs named)."""
    sysfs = st.sysfs
    devs = find_devices(sysfs, [normalize_name(d) for d in devices] if devices else None)
    rows = [device_json(sysfs, d) for d in devs]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("DEVICE", "MODE", "SIZE", "NODE", "ALIGN", "MEMORY", "REGION")
    table = [header]
    needs_root = False
    for row in rows:
        if row.get("model") == "legacy":
            table.append((row["chardev"], "legacy model", _human(row["size"]), "-", "-", "-", "-"))
            continue
        mode = row["mode"] + (" (disabled)" if row.get("state") == "disabled" else "")
        mem = "-"
        if "online_memblocks" in row:
            mem = f"{row['online_memblocks']}/{row['total_memblocks']} online"
            if "movable" in row:
                mem += ", movable" if row["movable"] else ", not movable"
        elif "needs_root" in row:
            mem = "? (root)"
            needs_root = True
        reg = row.get("region", {})
        region = f"{reg.get('id', '?')} {'dynamic' if reg.get('dynamic') else 'static'}"
        table.append(
            (
                row["chardev"],
                mode,
                _human(row["size"]),
                str(row.get("target_node", "-")),
                _human(row["align"]) if "align" in row else "-",
                mem,
                region,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if needs_root:
        click.echo("memory block counts need root: resource and mappingN are readable by root only", err=True)


# ----------------------------------------------------------------------------- set


@main.command("set")
@click.argument("device")
@click.argument("mode")
@click.option("--no-online", is_flag=True, help="system-ram: leave the memory blocks offline.")
@click.option("--no-movable", is_flag=True, help="system-ram: online as ZONE_NORMAL, not ZONE_MOVABLE.")
@click.option("--force", is_flag=True, help="Offline online memory when leaving system-ram.")
@click.option("--dry-run", is_flag=True, help="Print each planned sysfs write; change nothing.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the kernel."
)
@click.pass_obj
def set_cmd(
    st: _State,
    device: str,
    mode: str,
    no_online: bool,
    no_movable: bool,
    force: bool,
    dry_run: bool,
    timeout: float,
) -> None:
    """Put DEVICE (dax0.0 or /dev/dax0.0) into MODE: devdax, fsdev (alias famfs) or system-ram."""
    target = Mode.parse(mode)
    if (no_online or no_movable) and target is not Mode.SYSTEM_RAM:
        raise InvalidArgument(f"--no-online/--no-movable only apply to system-ram, not {target}")

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    opts = Options(
        force=force,
        online=not no_online,
        movable=not no_movable,
        dry_run=dry_run,
        timeout=timeout,
        log=log if st.verbose else None,
    )
    out = set_mode(st.sysfs, normalize_name(device), target, opts)
    if dry_run:
        for line in out.plan.render():
            click.echo(line)
        return
    for w in out.warnings:
        click.echo(f"daxmode: warning: {w}", err=True)
    if not st.quiet:
        click.echo(out.summary())


# Other modules' commands, imported on first use (DaxmodeGroup.lazy).


def _register_ops() -> None:
    """operations commands (daxmode/cli_ops.py): apply, install-units, create-device, completion, man, ..."""
    from daxmode.cli_ops import COMMANDS as _OPS_COMMANDS

    for _cmd in _OPS_COMMANDS:
        main.add_command(_cmd)


def _register_famfs() -> None:
    """famfs commands (daxmode/cli_famfs.py)"""
    from daxmode.cli_famfs import famfs

    main.add_command(famfs)


main.lazy(_register_ops)  # type: ignore[attr-defined]
main.lazy(_register_famfs)  # type: ignore[attr-defined]


def run() -> None:
    """Console entry for environments that want a plain function (``python -m daxmode``)."""
    try:
        main(prog_name="daxmode")
    except SysfsError as e:  # pragma: no cover - DaxmodeGroup handles these
        click.echo(f"daxmode: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("DAXMODE_ROOT", "/")
    run()
