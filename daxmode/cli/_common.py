"""What every command shares: the run state, validated option types, and output helpers.

Option types validate at parse time (click types), so a malformed value is a usage error
(exit 2, one ``daxmode:`` line) before anything runs: sizes, finite positive timeouts,
non-negative offsets, octal modes, ids, and paths that must exist or be writable.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from daxmode.errors import InvalidArgument
from daxmode.sysfs import Sysfs

PROGRESS_MIN_BLOCKS = 16
"""Show a progress bar only when a step walks at least this many memory blocks."""


class State:
    """Global options; the Sysfs is built once, with the simulator attached only if ``--sim``."""

    def __init__(self, root: str | None, sim: bool, verbose: int, quiet: bool) -> None:
        self.root = root
        self.sim = sim
        self.verbose = verbose
        self.quiet = quiet
        self._sysfs: Sysfs | None = None

    @property
    def sysfs(self) -> Sysfs:
        if self._sysfs is None:
            self._sysfs = make_sysfs(self.root, self.sim)
        return self._sysfs


def make_sysfs(root: str | None, sim: bool) -> Sysfs:
    root = root or os.environ.get("DAXMODE_ROOT") or "/"
    if not os.path.isdir(root):  # an empty listing of a tree that is not there would be a lie
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        raise InvalidArgument(f"--root {root}: {what}")
    if not sim:
        return Sysfs(root)
    from daxmode.sim import SimKernel, is_simulated  # explicit injection: --sim / DAXMODE_SIM=1

    if not is_simulated(root):
        raise InvalidArgument(f"--sim: {root} is not a simulated tree (build one with daxmode.sim.Sim)")
    return Sysfs(root, SimKernel())


def state(ctx: click.Context) -> State:
    obj = ctx.find_root().obj
    if isinstance(obj, State):
        return obj
    return State(None, False, 0, False)  # a sub-group invoked on its own (tests)


def echo_json(obj: object) -> None:
    import json

    click.echo(json.dumps(obj, indent=2))


def table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def warn(msg: str) -> None:
    click.echo(f"daxmode: warning: {msg}", err=True)


# --- option types ------------------------------------------------------------------------------


class SizeType(click.ParamType):
    """Bytes, or a number with K/M/G/T (binary), as daxctl takes them."""

    name = "size"

    def __init__(self, positive: bool = True) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from daxmode.sizes import parse_size

        try:
            return parse_size(
                str(value), what=param.name if param and param.name else "size", positive=self.positive
            )
        except InvalidArgument as e:
            self.fail(str(e).removeprefix("bad "), param, ctx)


class OffsetType(click.ParamType):
    """A byte offset: a non-negative integer (decimal or 0x hex)."""

    name = "offset"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and value >= 0:
            return value
        try:
            n = int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not a byte offset (e.g. 0, 4096, 0x200000)", param, ctx)
        if n < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return n


class OctalMode(click.ParamType):
    """Permission bits in octal (up to 7777)."""

    name = "mode"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            m = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode (e.g. 0644)", param, ctx)
        if m < 0 or m & ~0o7777:
            self.fail(f"{value!r}: only permission bits (up to 7777) are allowed", param, ctx)
        return m


class TimeoutType(click.ParamType):
    """Seconds: a finite number above zero (``nan``, ``inf`` and negatives are refused)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            t = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(t) or t <= 0 or t > 86400:
            self.fail(f"{value!r} must be a finite number of seconds above 0 (at most 86400)", param, ctx)
        return t


SIZE = SizeType()
OFFSET = OffsetType()
OCTAL = OctalMode()
ID = click.IntRange(0, 2**32 - 2)  # uid/gid: (uid_t)-1 means "no change" to the kernel
TIMEOUT = TimeoutType()


def existing_file() -> click.Path:
    return click.Path(exists=True, dir_okay=False, readable=True)


class OutputFile(click.ParamType):
    """A file to write: not a directory, in a directory that exists and is writable."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        path = os.fspath(value)
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            self.fail(f"{path!r} is a directory", param, ctx)
        if not os.path.isdir(parent):
            self.fail(f"{path!r}: directory {parent!r} does not exist", param, ctx)
        if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            self.fail(f"{path!r} is not writable", param, ctx)
        return path


def output_file() -> OutputFile:
    return OutputFile()


# --- progress ----------------------------------------------------------------------------------


@contextmanager
def progress_bar(st: State) -> Iterator[Callable[[Any], None] | None]:
    """A callback for the executor's Progress events, drawing a bar on a terminal."""
    if st.quiet or not sys.stderr.isatty():
        yield None
        return
    bars: dict[tuple[str, str], Any] = {}

    def cb(ev: Any) -> None:
        if ev.total < PROGRESS_MIN_BLOCKS:
            return
        key = (ev.device, ev.what)
        bar = bars.get(key)
        if bar is None:
            bar = click.progressbar(
                length=ev.total, label=f"{ev.device}: {ev.what} memory blocks", file=sys.stderr
            )
            bar.__enter__()
            bars[key] = bar
        bar.update(ev.done - bar.pos)
        if ev.done >= ev.total:
            bar.render_finish()
            bars.pop(key, None)

    try:
        yield cb
    finally:
        for bar in bars.values():
            bar.render_finish()


# --- completion --------------------------------------------------------------------------------


def complete_devices(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion for DEVICE arguments: the dax devices that exist now."""
    from click.shell_completion import CompletionItem

    from daxmode.kernel.devices import device_names

    try:
        params = ctx.find_root().params
        names = device_names(make_sysfs(params.get("root"), bool(params.get("sim"))))
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_regions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    from daxmode.kernel.devices import region_ids

    try:
        params = ctx.find_root().params
        ids = region_ids(make_sysfs(params.get("root"), bool(params.get("sim"))))
    except Exception:
        return []
    return [CompletionItem(f"region{r}") for r in ids if f"region{r}".startswith(incomplete)]
