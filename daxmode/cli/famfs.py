"""``daxmode famfs ...``: famfs on dax devices (or image files), without needing famfs's C tools.

TARGET is a dax device (``dax0.0`` or ``/dev/dax0.0``) or a famfs image file.  Parsing and
printing only; the work is in :mod:`daxmode.famfs` and :mod:`daxmode.fsdev`.  Errors go to the
one handler in :mod:`daxmode.cli`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from daxmode.cli._common import ID, OCTAL, OFFSET, SIZE, echo_json, existing_file, output_file, state
from daxmode.errors import DeviceBusy, FamfsError, FamfsNotFound
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.identity import ensure_system_uuid, read_system_uuid
from daxmode.famfs.media.names import escape
from daxmode.famfs.media.results import CopyResult, CreatResult, MkdirResult
from daxmode.famfs.media.volume import Medium, Volume
from daxmode.famfs.medium import open_medium
from daxmode.sizes import count
from daxmode.sysfs import Sysfs


def _sysfs(ctx: click.Context) -> Sysfs:
    return state(ctx).sysfs


def _emit(data: object) -> None:
    echo_json(data)


def _say(ctx: click.Context, line: str) -> None:
    """A line on success: nothing under ``-q``."""
    if not state(ctx).quiet:
        click.echo(line)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


@contextlib.contextmanager
def _medium(ctx: click.Context, target: str, *, writable: bool) -> Iterator[Medium]:
    with open_medium(_sysfs(ctx), target, writable=writable) as m:
        try:
            yield m
        finally:
            if not state(ctx).quiet:
                for note in m.notes:
                    click.echo(f"note: {note}", err=True)


@contextlib.contextmanager
def _volume(ctx: click.Context, target: str, *, writable: bool) -> Iterator[Volume]:
    with _medium(ctx, target, writable=writable) as m:
        vol = Volume(m, read_system_uuid(_sysfs(ctx)))
        try:
            yield vol
        finally:
            vol.close()


_target = click.argument("target", metavar="TARGET")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_owner = [
    click.option("-m", "--mode", "mode", type=OCTAL, default=None, help="Permission bits, octal."),
    click.option("-u", "--uid", type=ID, default=0, show_default=True),
    click.option("-g", "--gid", type=ID, default=0, show_default=True),
]


def _with_owner(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(_owner):
        fn = opt(fn)
    return fn


@click.group("famfs")
def famfs() -> None:
    """famfs on dax devices and image files: format, check, list, create, read, bring up."""


@famfs.command("mkfs")
@_target
@click.option(
    "--log-len", type=SIZE, default="8M", show_default=True, help="Log size: a power of 2, at least 8M."
)
@click.option("--force", is_flag=True, help="Overwrite an existing famfs superblock (even another host's).")
@click.option("--kill", is_flag=True, help="With --force: only invalidate the superblock magic.")
@click.option("--version", "version", type=click.Choice(["47", "48"]), default="48", show_default=True)
@_json
@click.pass_context
def mkfs_cmd(
    ctx: click.Context, target: str, log_len: int, force: bool, kill: bool, version: str, as_json: bool
) -> None:
    """Format TARGET as famfs; this host becomes the master."""
    sysfs = _sysfs(ctx)
    me = ensure_system_uuid(sysfs)
    with _medium(ctx, target, writable=True) as m:
        from daxmode.famfs.media.volume import mkfs
        from daxmode.famfs.medium import mounts_of

        busy = mounts_of(sysfs, m)
        if busy:
            raise DeviceBusy(
                f"{m.daxdev} is mounted at {', '.join(busy)}; unmount it before formatting "
                "(--force does not override this: the mount would keep old names over reused space)"
            )
        res = mkfs(m, me, log_len=log_len, version=int(version), force=force, kill=kill)
    _warn(res.warnings)
    if as_json:
        _emit(res.to_json())
        return
    _say(ctx, res.summary())


@famfs.command("fsck")
@_target
@_json
@click.pass_context
def fsck_cmd(ctx: click.Context, target: str, as_json: bool) -> None:
    """Check superblock, log and allocations; exit 12 with one line per problem."""
    from daxmode.famfs.media.fsck import fsck as run_fsck

    with _medium(ctx, target, writable=False) as m:
        rep = run_fsck(m.buf, m.size)
    if as_json:
        _emit(rep.to_dict())
    else:
        sb = rep.superblock
        if sb is not None:
            click.echo(f"superblock: famfs v{sb.version} uuid {sb.uuid} master {sb.system_uuid}")
        st = rep.stats
        if st:
            click.echo(
                f"log: {st['log_entries']} of {st['log_capacity']} entries; {count(st['files'], 'file')}, "
                f"{count(st['directories'], 'directory', 'directories')}; "
                f"{st['allocated_bytes']} bytes allocated, {st['free_bytes']} free"
            )
        for n in rep.notes:
            click.echo(f"note: {n}")  # paths in fsck lines are repr()s: escaped
        for p in rep.problems:
            click.echo(f"problem: {p}")
    if rep.problems:
        raise FamfsError(f"fsck found {len(rep.problems)} problem(s) on {target}")


def _done(ctx: click.Context, res: MkdirResult | CreatResult | CopyResult, as_json: bool) -> None:
    """A mutating volume command's end: its JSON form, or its warnings and one line."""
    _warn(res.warnings)
    if as_json:
        _emit(res.to_json())
        return
    _say(ctx, res.summary())


def _ls_rows(vol: Volume, path: str) -> list[dict[str, object]]:
    node = vol.tree.lookup(path)
    if node is None:
        raise FamfsNotFound(f"{escape(path)}: no such file or directory in the log")
    if isinstance(node, L.FileMeta):
        return [node.to_dict()]
    rows = []
    for name in sorted(node.children):
        child = node.children[name]
        if isinstance(child, L.FileMeta):
            rows.append(child.to_dict())
        elif child.meta is not None:  # only the root has no entry of its own
            rows.append(child.meta.to_dict())
    return rows


@famfs.command("ls")
@_target
@click.argument("path", default="")
@click.option("-l", "--long", "long_", is_flag=True)
@_json
@click.pass_context
def ls_cmd(ctx: click.Context, target: str, path: str, long_: bool, as_json: bool) -> None:
    """List files and directories the log describes (no mount needed)."""
    with _volume(ctx, target, writable=False) as vol:
        rows = _ls_rows(vol, path)
    if as_json:
        _emit(rows)
        return
    for r in rows:
        name = escape(str(r["path"]).rpartition("/")[2]) + ("/" if r["type"] == "dir" else "")
        if long_:
            kind = "d" if r["type"] == "dir" else "-"
            size = r.get("size", 0)
            click.echo(f"{kind}{r['mode']:>6} {r['uid']:>5} {r['gid']:>5} {size:>12} {name}")
        else:
            click.echo(name)


@famfs.command("logplay")
@_target
@_json
@click.pass_context
def logplay_cmd(ctx: click.Context, target: str, as_json: bool) -> None:
    """Play the log into memory and report what it holds (famfs logplay without a mount).

    TARGET may also be the mount point of a famfs-v1 mount: then the entries the log gained since
    the mount are created in it (files mapped with FAMFSIOC_MAP_CREATE)."""
    import os

    if os.path.isdir(target):
        from daxmode.famfs.mount import v1

        _v1_report(v1.logplay(_sysfs(ctx), target), as_json)
        return
    with _volume(ctx, target, writable=False) as vol:
        tree = vol.tree
        bad = [why for _i, why in vol.scan.bad]
        errors = vol.scan.header_problems + bad + tree.errors
        data = {
            "role": vol.role,
            "entries": vol.next_index,
            "files": len(tree.files),
            "directories": len(tree.dirs),
            "skipped": tree.skipped,
            "errors": errors,
            "tree": [r.to_dict() for r in tree.walk()],
        }
    if as_json:
        _emit(data)
    else:
        click.echo(
            f"logplay: {count(vol.next_index, 'log entry', 'log entries')}; "
            f"{count(len(tree.files), 'file')}; "
            f"{count(len(tree.dirs), 'directory', 'directories')}; {count(len(errors), 'error')} "
            f"(this host is {vol.role})"
        )
        for e in errors:
            click.echo(f"error: {e}")
    if errors:
        raise FamfsError(f"logplay found {len(errors)} error(s)")


def _v1_report(rep: Any, as_json: bool) -> None:
    if as_json:
        _emit(rep.to_dict())
    else:
        for p in rep.created_dirs:
            click.echo(f"created directory {p}")
        for p in rep.created_files:
            click.echo(f"created file {p}")
        parts = [
            count(rep.entries, "log entry", "log entries"),
            count(len(rep.created_files), "new file"),
            count(len(rep.created_dirs), "new directory", "new directories"),
            f"{rep.present} already present",
            count(len(rep.refused), "refused entry", "refused entries"),
            count(len(rep.errors), "error"),
        ]
        click.echo("logplay: " + "; ".join(parts))
        for r in rep.refused:
            click.echo(f"refused: {r}")
        for e in rep.errors:
            click.echo(f"error: {e}")
    # A refused entry is a property of the volume, named every time and never mapped; errors are
    # entries that should have been played and were not.
    if rep.errors:
        raise FamfsError(f"logplay: {len(rep.errors)} error(s)")


@famfs.command("check")
@click.argument("mountpoint")
@_json
@click.pass_context
def check_cmd(ctx: click.Context, mountpoint: str, as_json: bool) -> None:
    """Read each file's map back from a famfs-v1 mount (FAMFSIOC_MAP_GET/GETEXT) and compare with the log."""
    from daxmode.famfs.mount import v1

    res = v1.check(_sysfs(ctx), mountpoint)
    bad = [r for r in res if not r.ok]
    if as_json:
        _emit({"files": [r.to_dict() for r in res], "ok": not bad})
    else:
        for r in bad:
            click.echo(f"mismatch: {r.path}: {r.problem}")
        n_bad = count(len(bad), "mismatch", "mismatches")
        click.echo(f"check: {count(len(res), 'file')} compared with the kernel's maps; {n_bad}")
    if bad:
        raise FamfsError(f"check: {len(bad)} of {len(res)} file(s) differ from the log")


@famfs.command("mkdir")
@_target
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="Create missing parents (with the same mode and owner).")
@_with_owner
@_json
@click.pass_context
def mkdir_cmd(
    ctx: click.Context,
    target: str,
    path: str,
    parents: bool,
    mode: int | None,
    uid: int,
    gid: int,
    as_json: bool,
) -> None:
    """Create a directory (master only)."""
    with _volume(ctx, target, writable=True) as vol:
        made = vol.mkdir(path, mode=0o755 if mode is None else mode, uid=uid, gid=gid, parents=parents)
        res = MkdirResult(vol.medium.daxdev, path.strip("/"), made)
    _done(ctx, res, as_json)


@famfs.command("creat")
@_target
@click.argument("path")
@click.option("-s", "--size", "size", type=SIZE, required=True, help="File size (e.g. 4096, 64M, 1G).")
@click.option("-N", "--nstrips", type=click.IntRange(0, 16), default=0, help="Interleave across N strips.")
@click.option("-C", "--chunk", type=SIZE, default="2M", show_default=True, help="Interleave chunk size.")
@click.option(
    "-B",
    "--nbuckets",
    type=click.IntRange(1, 64),
    default=None,
    help="Buckets to spread strips over (default N).",
)
@click.option(
    "--small-buckets",
    is_flag=True,
    help="Allow buckets under 1 GiB (famfs requires 1 GiB; small test devices need this).",
)
@click.option(
    "-r", "--random", "randomize", is_flag=True,
    help="Fill the file with pseudo-random bytes from --seed before logging it (famfs creat -r).",
)  # fmt: skip
@click.option("-S", "--seed", type=click.IntRange(0), default=None, help="Seed for -r (default: random).")
@_with_owner
@_json
@click.pass_context
def creat_cmd(
    ctx: click.Context,
    target: str,
    path: str,
    size: int,
    nstrips: int,
    chunk: int,
    nbuckets: int | None,
    small_buckets: bool,
    randomize: bool,
    seed: int | None,
    mode: int | None,
    uid: int,
    gid: int,
    as_json: bool,
) -> None:
    """Allocate and log a file (master only); an existing file of the same size is kept.

    With -r the data is written before the entry is logged: killed at any point, the volume has
    no such file or the whole file."""
    from daxmode.famfs.media.copy import SeededBytes

    if seed is not None and not randomize:
        raise click.UsageError("--seed needs -r")
    if randomize and seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    with _volume(ctx, target, writable=True) as vol:
        meta, created = vol.creat(
            path,
            size,
            mode=0o644 if mode is None else mode,
            uid=uid,
            gid=gid,
            nstrips=nstrips,
            chunk=chunk if nstrips else 0,
            nbuckets=nbuckets,
            min_bucket=L.ALLOC_UNIT if small_buckets else None,
            data=SeededBytes(size, seed) if randomize and seed is not None else None,
        )
        res = CreatResult(vol.medium.daxdev, meta, created, seed=seed if randomize else None)
    _done(ctx, res, as_json)


@famfs.command("cp")
@_target
@click.argument("sources", nargs=-1, required=True, type=existing_file(), metavar="SRC...")
@click.argument("dest", metavar="DEST")
@click.option("--overwrite", is_flag=True, help="Rewrite an existing famfs file of the same size in place.")
@_with_owner
@_json
@click.pass_context
def cp_cmd(
    ctx: click.Context,
    target: str,
    sources: tuple[str, ...],
    dest: str,
    overwrite: bool,
    mode: int | None,
    uid: int,
    gid: int,
    as_json: bool,
) -> None:
    """Copy local files into famfs (master only); each new file's data is on the device before its
    log entry, so an interrupted copy leaves no file or the whole file.  Existing names need
    --overwrite (exit 15 without it)."""
    from daxmode.famfs.media.copy import copy_in

    with _volume(ctx, target, writable=True) as vol:
        copies = list(copy_in(vol, list(sources), dest, mode=mode, uid=uid, gid=gid, overwrite=overwrite))
        res = CopyResult(vol.medium.daxdev, dest, copies)
    _done(ctx, res, as_json)


@famfs.command("cat")
@_target
@click.argument("path")
@click.pass_context
def cat_cmd(ctx: click.Context, target: str, path: str) -> None:
    """Write a famfs file's bytes to stdout."""
    _read_out(ctx, target, path, None, 0, None)


@famfs.command("read")
@_target
@click.argument("path")
@click.option("-o", "--output", type=output_file(), default=None, help="Write here, not stdout.")
@click.option("--offset", type=OFFSET, default=0, help="Start at this byte.")
@click.option("--length", type=SIZE, default=None, help="Read at most this many bytes.")
@click.pass_context
def read_cmd(
    ctx: click.Context, target: str, path: str, output: str | None, offset: int, length: int | None
) -> None:
    """Read a famfs file (or a range of it) to stdout or a file."""
    _read_out(ctx, target, path, output, offset, length)


def _read_out(
    ctx: click.Context, target: str, path: str, output: str | None, off: int, length: int | None
) -> None:
    from daxmode.famfs.media.copy import read_out

    with _volume(ctx, target, writable=False) as vol:
        if output is None:
            read_out(vol, path, sys.stdout.buffer, off, length)
            return
        with open(output, "wb") as out:
            read_out(vol, path, out, off, length)


@famfs.command("getmap")
@_target
@click.argument("path")
@_json
@click.pass_context
def getmap_cmd(ctx: click.Context, target: str, path: str, as_json: bool) -> None:
    """Show a file's extents (device offsets) as the log records them."""
    with _volume(ctx, target, writable=False) as vol:
        meta = vol.lookup_file(path)
    if as_json:
        _emit(meta.to_dict())
        return
    click.echo(f"File: {escape(meta.path)}\n\tsize: {meta.size}")
    if meta.interleaved:
        click.echo(f"\tinterleaved: {meta.nstrips} strips, chunk {meta.chunk_size:#x}")
    else:
        click.echo(f"\textents: {len(meta.extents)}")
    for _d, off, ln in meta.extents:
        click.echo(f"\t\t{off:#x}\t{ln:#x}")


_data_path = click.option(
    "--data-path",
    type=click.Choice(["auto", "dax", "copy", "famfs-v1"]),
    default="auto",
    show_default=True,
    help="dax: the famfs kernel maps files (device in fsdev); copy: the server copies (devdax); "
    "famfs-v1: the standalone famfs module maps files (devdax, no server).",
)


@famfs.command("mount")
@click.argument("target", metavar="DEVICE")
@click.argument("mountpoint")
@click.option("--foreground", is_flag=True, help="Serve in this process until unmounted (Ctrl-C unmounts).")
@_data_path
@_json
@click.pass_context
def mount_cmd(
    ctx: click.Context, target: str, mountpoint: str, foreground: bool, data_path: str, as_json: bool
) -> None:
    """Mount the famfs on DEVICE (dax0.0, or an image file) at MOUNTPOINT with daxmode's FUSE server.

    Returns once the mount is live; the server runs on in the background until
    `daxmode famfs umount MOUNTPOINT`, which also restores the device's mode."""

    from daxmode.famfs.mount import command as famfs_mount

    def ready(res: famfs_mount.MountResult) -> None:
        _warn(res.warnings)
        if as_json:
            _emit(res.to_json())
            return
        if state(ctx).quiet:
            return
        for s in res.steps:
            click.echo(s)
        if res.server_pid:
            tail = "; Ctrl-C or SIGTERM unmounts" if foreground else ""
            click.echo(f"server pid {res.server_pid}{tail}")

    res = famfs_mount.mount(
        _sysfs(ctx), target, mountpoint, data_path=data_path, foreground=foreground, on_ready=ready
    )
    if not foreground or not res.server_pid:
        ready(res)


@famfs.command("umount")
@click.argument("mountpoint")
@click.option(
    "--lazy", is_flag=True, help="Detach now even if files are open; the server finishes when they close."
)
@_json
@click.pass_context
def umount_cmd(ctx: click.Context, mountpoint: str, lazy: bool, as_json: bool) -> None:
    """Unmount a daxmode famfs mount and put its device back in the mode it had before."""
    from daxmode.famfs.mount import command as famfs_mount

    res = famfs_mount.umount(_sysfs(ctx), mountpoint, lazy=lazy)
    _warn(res.warnings)
    if as_json:
        _emit(res.to_json())
        return
    for s in res.lines():
        _say(ctx, s)


@famfs.command("up")
@click.argument("device")
@click.argument("mountpoint")
@click.option("--format", "fmt", is_flag=True, help="Format the device if it has no famfs superblock.")
@click.option("--no-mount", is_flag=True, help="Only prepare: superblock check/format and fsdev mode.")
@click.option("--log-len", type=SIZE, default="8M", show_default=True)
@click.option("--version", "version", type=click.Choice(["47", "48"]), default="48", show_default=True)
@_data_path
@_json
@click.pass_context
def up_cmd(
    ctx: click.Context,
    device: str,
    mountpoint: str,
    fmt: bool,
    no_mount: bool,
    log_len: int,
    version: str,
    data_path: str,
    as_json: bool,
) -> None:
    """Format DEVICE on request and mount it (daxmode famfs mount); --no-mount leaves it in fsdev."""
    from daxmode.famfs.bringup import up as famfs_up

    res = famfs_up(
        _sysfs(ctx),
        device,
        mountpoint,
        format=fmt,
        mount=not no_mount,
        log_len=log_len,
        version=int(version),
        data_path=data_path,
    )
    if as_json:
        _emit(res.to_json())
        return
    for s in res.steps:
        _say(ctx, s)
    if not res.mounted:
        _say(ctx, f"{res.device} is ready in fsdev mode (not mounted)")


@famfs.command("down")
@click.argument("mountpoint")
@click.option("--restore-mode", is_flag=True, help="Return the device to the mode it had before `up`.")
@_json
@click.pass_context
def down_cmd(ctx: click.Context, mountpoint: str, restore_mode: bool, as_json: bool) -> None:
    """Unmount a famfs mount point (daxmode famfs umount), or undo a --no-mount preparation."""
    from daxmode.famfs.bringup import down as famfs_down

    steps = famfs_down(_sysfs(ctx), mountpoint, restore_mode=restore_mode)
    if as_json:
        _emit({"mountpoint": os.path.abspath(mountpoint), "steps": steps, "warnings": []})
        return
    for s in steps:
        _say(ctx, s)


@famfs.command("status")
@_json
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """What famfs needs here and what is missing: kernel support, famfs tools, device modes."""
    from daxmode.famfs.status import status as famfs_status

    st = famfs_status(_sysfs(ctx))
    if as_json:
        _emit(st.to_json())
        return
    k = st.kernel
    flavours = [n for n, ok in (("fuse-famfs", k.fuse_famfs), ("famfs v1", k.famfs_v1)) if ok]
    click.echo(f"kernel {k.release}: famfs support: {', '.join(flavours) or 'none'}")
    for ev in k.evidence:
        click.echo(f"  evidence: {ev}")
    click.echo(f"fsdev_dax driver: {'available' if k.fsdev_driver else 'not found'}")
    click.echo(f"data path for new mounts: {st.data_path} ({st.data_path_why})")
    click.echo(f"famfs tools (optional): {st.tools.famfs or 'not installed'}")
    click.echo(f"system UUID: {st.system_uuid or 'none (this host is a client everywhere)'}")
    for d in st.devices:
        click.echo(d.line())
    for m in st.mounts:
        click.echo(
            f"mount {m.mountpoint}: {m.source}, data path {m.data_path}, "
            f"server pid {m.server_pid} ({m.state})"
        )
        for why in m.skipped_entries:
            click.echo(f"  skipped: {why}")
    if st.missing_for_mount:
        click.echo("cannot mount famfs here:")
        for why in st.missing_for_mount:
            click.echo(f"  - {why}")
        click.echo(
            "user-space access (daxmode famfs ls/cat, daxmode.famfs.media.access) works without a mount"
        )
    else:
        click.echo("famfs mounts are possible (daxmode famfs mount DEVICE MOUNTPOINT)")


__all__ = ["famfs"]
