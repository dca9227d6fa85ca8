"""Operations commands: apply, install-units, uninstall-units, create-device, destroy-device,
resize, completion, man.  Parsing and printing only; the work is in :mod:`daxmode.ops`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from typing import Any

import click

from daxmode.cli._common import (
    SIZE,
    SizeType,
    State,
    complete_devices,
    complete_regions,
    echo_json,
    output_file,
    progress_bar,
    table,
)
from daxmode.errors import InvalidArgument
from daxmode.kernel.devices import Mode


def setup_logging(st: State) -> None:
    """-v: info (-vv: debug) from daxmode's library loggers on stderr; -q: errors only."""
    level = logging.ERROR if st.quiet else logging.WARNING if not st.verbose else logging.INFO
    if st.verbose > 1:
        level = logging.DEBUG
    root = logging.getLogger("daxmode")
    if not any(h.get_name() == "daxmode-cli" for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("daxmode: %(message)s"))
        h.set_name("daxmode-cli")  # added once per process
        root.addHandler(h)
    root.setLevel(level)


# --- apply ------------------------------------------------------------------------------------------


@click.command("apply")
@click.option("--dry-run", is_flag=True, help="Show what each device would need; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
@click.option("--udev", is_flag=True, hidden=True, help="Timestamped lines for the udev/systemd log.")
@click.argument("devices", nargs=-1, shell_complete=complete_devices)
@click.pass_obj
def apply_cmd(st: State, dry_run: bool, as_json: bool, udev: bool, devices: tuple[str, ...]) -> None:
    """Put devices into the modes /etc/daxmode.d/*.toml (and /etc/daxctl.conf.d/*.conf) ask for.

    Every device on the dax bus, or only the DEVICEs named.  Devices already in their
    configured mode are left alone, so running it again changes nothing.  Exits non-zero
    (with the first failure's code) if any device failed.
    """
    from daxmode.ops import apply as applymod

    setup_logging(st)
    log = (lambda m: click.echo(m, err=True)) if st.verbose else None
    with progress_bar(st) as cb:
        results = applymod.apply(st.sysfs, devices or None, dry_run=dry_run, log=log, progress=cb)
    if as_json:
        echo_json([r.to_json() for r in results])
    elif udev:
        stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        for r in results:
            detail = f" ({r.rule}: {r.start} -> {r.target})" if r.rule else ""
            msg = f": {r.message}" if r.message else ""
            click.echo(f"{stamp} daxmode apply {r.device}: {r.status}{detail}{msg}")
    elif not st.quiet or any(r.status == applymod.FAILED for r in results):
        rows = [("DEVICE", "RULE", "FROM", "TO", "RESULT")]
        for r in results:
            rows.append((r.device, r.rule or "-", r.start or "-", r.target or "-", r.status))
        table(rows)
        for r in results:
            if r.status == applymod.FAILED:
                click.echo(f"daxmode: {r.device}: {r.message}", err=True)
            elif r.plan:
                click.echo(f"{r.device}:")
                for line in r.plan:
                    click.echo(f"  {line}")
    code = applymod.exit_code(results)
    if code:
        sys.exit(code)


# --- units ------------------------------------------------------------------------------------------


def _print_units(report: Any, as_json: bool, quiet: bool) -> None:
    if as_json:
        echo_json(report.to_json())
        return
    if quiet:
        return
    for line in report.lines():
        click.echo(line)


@click.command("install-units")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False),
    help="Install under DIR (packaging DESTDIR) instead of the root; nothing is reloaded.",
)
@click.option(
    "--flavour",
    type=click.Choice(("auto", "systemd", "run")),
    default="auto",
    show_default=True,
    help="systemd: udev starts daxmode-apply@DEV.service; run: udev runs daxmode itself "
    "(no systemd). auto: systemd if it is PID 1.",
)
@click.option("--daxmode", "executable", help="Command the rule runs (default: this daxmode).")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def install_units_cmd(
    st: State, prefix: str | None, flavour: str, executable: str | None, dry_run: bool, as_json: bool
) -> None:
    """Install the udev rule (and systemd unit) that run `daxmode apply DEV` when a device appears."""
    from daxmode.ops import units

    setup_logging(st)
    report = units.install(st.sysfs, prefix=prefix, flavour=flavour, executable=executable, dry_run=dry_run)
    _print_units(report, as_json, st.quiet)


@click.command("uninstall-units")
@click.option("--prefix", type=click.Path(file_okay=False), help="Remove from DIR instead of the root.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def uninstall_units_cmd(st: State, prefix: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove what install-units installed."""
    from daxmode.ops import units

    setup_logging(st)
    report = units.uninstall(st.sysfs, prefix=prefix, dry_run=dry_run)
    _print_units(report, as_json, st.quiet)


# --- sub-devices ------------------------------------------------------------------------------------


def _print_sub(res: Any, as_json: bool, quiet: bool) -> None:
    if as_json:
        echo_json(res.to_json())
        return
    if res.dry_run:
        click.echo(f"{res.action} {res.device} (region{res.region}), dry run:")
        for s in res.steps:
            click.echo(f"  {s}")
        return
    if res.note:
        click.echo(f"daxmode: {res.note}", err=True)
    if quiet:
        return
    if res.action == "destroy":
        click.echo(f"destroyed {res.device}" if not res.note else f"{res.device}: size 0")
    else:
        size = f"{res.size:#x} ({res.size >> 20} MiB)" if res.size is not None else "?"
        click.echo(f"{res.device}: size {size}, align {res.align:#x}, {res.mode}")


@click.command("create-device")
@click.argument("region", shell_complete=complete_regions)
@click.option("--size", type=SIZE, help="Bytes or K/M/G/T (binary); default: all available space.")
@click.option("--align", type=SIZE, help="4K, 2M or 1G; default: the region's.")
@click.option(
    "--mode", "mode_name", default="devdax", show_default=True, help="Mode to bind the new device in."
)
@click.option("--no-online", is_flag=True, help="system-ram: leave the memory offline.")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def create_device_cmd(
    st: State,
    region: str,
    size: int | None,
    align: int | None,
    mode_name: str,
    no_online: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Carve a new device out of dynamic REGION (N or regionN; hmem or CXL RAM)."""
    from daxmode.ops import subdevices

    setup_logging(st)
    res = subdevices.create_device(
        st.sysfs,
        region,
        size=size,
        align=align,
        mode=Mode.parse(mode_name),
        online=not no_online,
        dry_run=dry_run,
    )
    _print_sub(res, as_json, st.quiet)


@click.command("destroy-device")
@click.argument("device", shell_complete=complete_devices)
@click.option("--force", is_flag=True, help="Unbind an active device first (offlining its memory if needed).")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def destroy_device_cmd(st: State, device: str, force: bool, dry_run: bool, as_json: bool) -> None:
    """Give DEVICE's memory back to its dynamic region and delete it (device 0 stays, at size 0)."""
    from daxmode.ops import subdevices

    setup_logging(st)
    res = subdevices.destroy_device(st.sysfs, device, force=force, dry_run=dry_run)
    _print_sub(res, as_json, st.quiet)


@click.command("resize")
@click.argument("device", shell_complete=complete_devices)
@click.option(
    "--size",
    type=SizeType(positive=False),
    required=True,
    help="New size: bytes or K/M/G/T, a multiple of max(align, 2M).",
)
@click.option("--force", is_flag=True, help="Unbind a bound device, resize, and bind it again in its mode.")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def resize_cmd(st: State, device: str, size: int, force: bool, dry_run: bool, as_json: bool) -> None:
    """Change the size of DEVICE in a dynamic region (it must be unbound, or use --force)."""
    from daxmode.ops import subdevices

    setup_logging(st)
    res = subdevices.resize_device(st.sysfs, device, size, force=force, dry_run=dry_run)
    _print_sub(res, as_json, st.quiet)


# --- completion and man -----------------------------------------------------------------------------


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(daxmode completion bash)"     (or save it in /etc/bash_completion.d/daxmode)
    zsh:  eval "$(daxmode completion zsh)"
    fish: daxmode completion fish > ~/.config/fish/completions/daxmode.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion support for {shell}")
    comp = cls(root, {}, "daxmode", "_DAXMODE_COMPLETE")
    click.echo(comp.source())


@click.command("man")
@click.option("-o", "--output", type=output_file(), help="Write to FILE (man/daxmode.1).")
@click.pass_context
def man_cmd(ctx: click.Context, output: str | None) -> None:
    """Print the daxmode(1) man page (roff), generated from the command tree."""
    from daxmode import __version__
    from daxmode.cli import manpage

    text = manpage.render(ctx.find_root().command, "daxmode", __version__)
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise InvalidArgument(f"cannot write {output}: {e.strerror}") from None
    else:
        click.echo(text, nl=False)
