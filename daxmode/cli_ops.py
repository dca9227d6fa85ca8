"""Operations commands: apply, install-units, uninstall-units, create-device, destroy-device,
resize, completion, man.  Parsing and printing only; the work is in the library modules.

Registered at the bottom of :mod:`daxmode.cli` by one loop over :data:`COMMANDS`.  This
module must not import :mod:`daxmode.cli` at import time (cli imports us).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from daxmode import apply as applymod
from daxmode import manpage, subdevices, units
from daxmode.errors import InvalidArgument
from daxmode.modes import Mode
from daxmode.sysfs import Sysfs, open_root
from daxmode.topology import device_names

PROGRESS_MIN_BLOCKS = 16
"""Show a progress bar only when a step walks at least this many memory blocks."""


# --- shared helpers ---------------------------------------------------------------------------------


def _sysfs(st: Any) -> Sysfs:
    """The root the group was given (``--root`` / $DAXMODE_ROOT)."""
    return st.sysfs if st is not None and hasattr(st, "sysfs") else open_root()


def setup_logging(st: Any) -> None:
    """-v: info (-vv: debug) from daxmode's library loggers on stderr; -q: errors only."""
    verbose = getattr(st, "verbose", 0) or 0
    quiet = getattr(st, "quiet", False)
    level = logging.ERROR if quiet else logging.WARNING if not verbose else logging.INFO
    if verbose > 1:
        level = logging.DEBUG
    root = logging.getLogger("daxmode")
    if not any(getattr(h, "_daxmode", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("daxmode: %(message)s"))
        h._daxmode = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2))


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def complete_devices(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion for DEVICE arguments: the dax devices that exist now."""
    try:
        root = ctx.find_root().params.get("root")
        names = device_names(open_root(root))
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_regions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        root = ctx.find_root().params.get("root")
        regions = sorted(
            {n.split(".")[0].removeprefix("dax") for n in device_names(open_root(root))}, key=int
        )
    except Exception:
        return []
    return [CompletionItem(f"region{r}") for r in regions if f"region{r}".startswith(incomplete)]


@contextmanager
def _progress(st: Any) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress callback drawing a bar on a terminal while blocks are onlined/offlined."""
    if getattr(st, "quiet", False) or not sys.stderr.isatty():
        yield None
        return
    bars: dict[str, Any] = {}

    def cb(what: str, done: int, total: int) -> None:
        if total < PROGRESS_MIN_BLOCKS:
            return
        bar = bars.get(what)
        if bar is None or bar.length != total:
            if bar is not None:
                bar.render_finish()
            bar = click.progressbar(length=total, label=f"{what} memory blocks", file=sys.stderr)
            bar.__enter__()
            bars[what] = bar
        bar.update(done - bar.pos)
        if done >= total:
            bar.render_finish()
            bars.pop(what, None)

    try:
        yield cb
    finally:
        for bar in bars.values():
            bar.render_finish()


# --- apply ------------------------------------------------------------------------------------------


@click.command("apply")
@click.option("--dry-run", is_flag=True, help="Show what each device would need; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
@click.option("--udev", is_flag=True, hidden=True, help="Timestamped lines for the udev/systemd log.")
@click.argument("devices", nargs=-1, shell_complete=complete_devices)
@click.pass_obj
def apply_cmd(st: Any, dry_run: bool, as_json: bool, udev: bool, devices: tuple[str, ...]) -> None:
    """Put devices into the modes /etc/daxmode.d/*.toml (and /etc/daxctl.conf.d/*.conf) ask for.

    Every device on the dax bus, or only the DEVICEs named.  Devices already in their
    configured mode are left alone, so running it again changes nothing.  Exits non-zero
    (with the first failure's code) if any device failed.
    """
    setup_logging(st)
    sysfs = _sysfs(st)
    log = (lambda m: click.echo(m, err=True)) if getattr(st, "verbose", 0) else None
    with _progress(st) as cb:
        results = applymod.apply(sysfs, devices or None, dry_run=dry_run, log=log, progress=cb)
    if as_json:
        _echo_json([r.to_json() for r in results])
    elif udev:
        stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        for r in results:
            detail = f" ({r.rule}: {r.start} -> {r.target})" if r.rule else ""
            msg = f": {r.message}" if r.message else ""
            click.echo(f"{stamp} daxmode apply {r.device}: {r.status}{detail}{msg}")
    elif not getattr(st, "quiet", False) or any(r.status == applymod.FAILED for r in results):
        rows = [("DEVICE", "RULE", "FROM", "TO", "RESULT")]
        for r in results:
            rows.append((r.device, r.rule or "-", r.start or "-", r.target or "-", r.status))
        _table(rows)
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


def _print_units(report: units.UnitsReport, as_json: bool, quiet: bool) -> None:
    if as_json:
        _echo_json(report.to_json())
        return
    if quiet:
        return
    for p in report.installed:
        click.echo(f"installed {p}")
    for p in report.removed:
        click.echo(f"removed {p}")
    for c in report.reloaded:
        click.echo(f"ran {c}")
    for n in report.notes:
        click.echo(f"note: {n}")


@click.command("install-units")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False),
    help="Install under DIR (packaging DESTDIR) instead of the root; nothing is reloaded.",
)
@click.option(
    "--flavour",
    type=click.Choice(units.FLAVOURS),
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
    st: Any, prefix: str | None, flavour: str, executable: str | None, dry_run: bool, as_json: bool
) -> None:
    """Install the udev rule (and systemd unit) that run `daxmode apply DEV` when a device appears."""
    setup_logging(st)
    report = units.install(_sysfs(st), prefix=prefix, flavour=flavour, executable=executable, dry_run=dry_run)
    _print_units(report, as_json, getattr(st, "quiet", False))


@click.command("uninstall-units")
@click.option("--prefix", type=click.Path(file_okay=False), help="Remove from DIR instead of the root.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def uninstall_units_cmd(st: Any, prefix: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove what install-units installed."""
    setup_logging(st)
    report = units.uninstall(_sysfs(st), prefix=prefix, dry_run=dry_run)
    _print_units(report, as_json, getattr(st, "quiet", False))


# --- sub-devices ------------------------------------------------------------------------------------


def _print_sub(res: subdevices.SubdeviceResult, as_json: bool, quiet: bool) -> None:
    if as_json:
        _echo_json(res.to_json())
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
@click.option("--size", help="Bytes or K/M/G/T (binary); default: all available space.")
@click.option("--align", help="4K, 2M or 1G; default: the region's.")
@click.option(
    "--mode", "mode_name", default="devdax", show_default=True, help="Mode to bind the new device in."
)
@click.option("--no-online", is_flag=True, help="system-ram: leave the memory offline.")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def create_device_cmd(
    st: Any,
    region: str,
    size: str | None,
    align: str | None,
    mode_name: str,
    no_online: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Carve a new device out of dynamic REGION (N or regionN; hmem or CXL RAM)."""
    setup_logging(st)
    res = subdevices.create_device(
        _sysfs(st),
        region,
        size=size,
        align=align,
        mode=Mode.parse(mode_name),
        online=not no_online,
        dry_run=dry_run,
    )
    _print_sub(res, as_json, getattr(st, "quiet", False))


@click.command("destroy-device")
@click.argument("device", shell_complete=complete_devices)
@click.option("--force", is_flag=True, help="Unbind an active device first (offlining its memory if needed).")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def destroy_device_cmd(st: Any, device: str, force: bool, dry_run: bool, as_json: bool) -> None:
    """Give DEVICE's memory back to its dynamic region and delete it (device 0 stays, at size 0)."""
    setup_logging(st)
    res = subdevices.destroy_device(_sysfs(st), device, force=force, dry_run=dry_run)
    _print_sub(res, as_json, getattr(st, "quiet", False))


@click.command("resize")
@click.argument("device", shell_complete=complete_devices)
@click.option("--size", required=True, help="New size: bytes or K/M/G/T, a multiple of max(align, 2M).")
@click.option("--force", is_flag=True, help="Unbind a bound device, resize, and bind it again in its mode.")
@click.option("--dry-run", is_flag=True, help="Print the planned writes; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def resize_cmd(st: Any, device: str, size: str, force: bool, dry_run: bool, as_json: bool) -> None:
    """Change the size of DEVICE in a dynamic region (it must be unbound, or use --force)."""
    setup_logging(st)
    res = subdevices.resize_device(_sysfs(st), device, size, force=force, dry_run=dry_run)
    _print_sub(res, as_json, getattr(st, "quiet", False))


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
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion support for {shell}")
    comp = cls(root, {}, "daxmode", "_DAXMODE_COMPLETE")
    click.echo(comp.source())


@click.command("man")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE (man/daxmode.1)."
)
@click.pass_context
def man_cmd(ctx: click.Context, output: str | None) -> None:
    """Print the daxmode(1) man page (roff), generated from the command tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("daxmode")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "unknown"
    text = manpage.render(ctx.find_root().command, "daxmode", ver)
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise InvalidArgument(f"cannot write {output}: {e.strerror}") from None
    else:
        click.echo(text, nl=False)


COMMANDS: list[click.Command] = [
    apply_cmd,
    install_units_cmd,
    uninstall_units_cmd,
    create_device_cmd,
    destroy_device_cmd,
    resize_cmd,
    completion_cmd,
    man_cmd,
]
