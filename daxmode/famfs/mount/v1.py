"""The famfs-v1 data path: a famfs volume mounted on the standalone famfs kernel module.

On a kernel with the standalone famfs module (``fs/famfs``, :mod:`.v1abi`), the kernel serves the
files itself once user space has created them: ``mount -t famfs /dev/daxX.Y MNT`` (the device
stays in devdax mode: the module reaches it through ``fs_dax_get()`` on the devdax device), then
``.meta/.superblock`` and ``.meta/.log`` created and mapped with ``FAMFSIOC_MAP_CREATE``, then
every directory and file of the log created in log order, each file mapped onto its extents and
given the log's mode and owner.  No server process stays behind; the mount record under
/run/daxmode says which mode to restore at ``umount``.

New log entries (another host's ``daxmode famfs cp``) reach a live mount by an explicit
``daxmode famfs logplay MNT``, which reads the log through ``.meta/.log`` and creates what is not
there yet.  Why not a watcher process: the module has no upcall, so a watcher could only poll
the shared log; an explicit, idempotent logplay is what famfs's own v1 user space does, costs
nothing between runs, and reports its errors to the caller who can act on them.

Every map is checked before it is sent: the superblock and log header must pass fsck, every file
entry the one extent validator (:mod:`daxmode.famfs.media.extents`, issue 16: inside the device,
clear of the superblock, the log and every earlier file, exact interleave geometry), checked as
the log is played and again right before its ioctl, and :func:`.v1abi.plan_file` refuses what the
v1 ABI cannot express (more than two extents, interleaving that does not reduce to two).  A
refused entry is named and skipped; the rest of the tree is mounted.  :func:`check` reads each
file's map back with ``FAMFSIOC_MAP_GET``/``MAP_GETEXT`` and compares it with the log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from daxmode.errors import DaxmodeError, FamfsError, KernelRefused, LeftPartial
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.media.log import scan_log
from daxmode.famfs.mount import records as S
from daxmode.famfs.mount import v1abi as A
from daxmode.famfs.mount.spec import V1, MountResult, Target, umount_refused
from daxmode.kernel.mountpoint import (
    MNT_DETACH,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    attach,
    hold_mountpoint,
    open_mountpoint,
)
from daxmode.kernel.mounts import mount_at
from daxmode.sysfs import Sysfs

META = ".meta"
MODE = "devdax"
"""The mode the module needs: fs_dax_get() takes the devdax device (dev_dax_iomap 3/12, 5/12)."""


@dataclass
class PlayReport:
    """What one pass over the log did to a v1 mount."""

    entries: int = 0
    created_files: list[str] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)
    present: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "entries": self.entries,
            "created_files": self.created_files,
            "created_directories": self.created_dirs,
            "already_present": self.present,
            "refused": self.refused,
            "errors": self.errors,
        }


# --- the kernel's side ------------------------------------------------------------------------------
def load_module(sysfs: Sysfs) -> str | None:
    """``modprobe famfs`` unless /proc/filesystems already lists it; a line saying so, or None."""
    from daxmode.kernel import drivers
    from daxmode.kernel.features import filesystem_registered

    if filesystem_registered(sysfs, A.FSTYPE):
        return None
    drivers.load(sysfs, A.FSTYPE)
    if not filesystem_registered(sysfs, A.FSTYPE):
        raise KernelRefused("modprobe famfs succeeded but /proc/filesystems does not list famfs")
    return "loaded the famfs kernel module"


def ioctl_map_create(fd: int, m: A.V1Map) -> None:
    fcntl.ioctl(fd, A.MAP_CREATE, A.pack_map(m))


def ioctl_map_read(fd: int) -> A.V1Map | None:
    """The map the module holds for the open file (MAP_GET, then MAP_GETEXT), None if it has none."""
    buf = bytearray(A.MAP.size)
    try:
        fcntl.ioctl(fd, A.MAP_GET, buf, True)
    except OSError as e:
        if e.errno == errno.EINVAL:  # the module's answer for a file without a map
            return None
        raise
    _ext_type, size, count = A.unpack_map_header(buf)
    if not 1 <= count <= A.MAX_EXTENTS:
        raise FamfsError(f"MAP_GET reported {count} extents; the v1 ABI holds 1..{A.MAX_EXTENTS}")
    ext = A.getext_buffer(count)
    fcntl.ioctl(fd, A.MAP_GETEXT, ext, True)
    return A.V1Map(A.FILE_REG, size, A.unpack_extents(ext, count))


# --- reading the volume -----------------------------------------------------------------------------
def _volume_bytes(head: bytes, log: bytes) -> bytearray:
    """Superblock region + log laid out as on the device, for fsck (data is never read)."""
    buf = bytearray(L.LOG_OFFSET + len(log))
    buf[: len(head)] = head
    buf[L.LOG_OFFSET :] = log
    return buf


def _checked(buf: bytearray, device_size: int, where: str) -> L.Superblock:
    """Refuse a volume whose superblock or log header is bad (fsck's fatal problems, as the FUSE
    server does); entries that fail are skipped one by one as the log is played."""
    rep = fsck(buf, device_size)
    if rep.fatal:
        more = f" (and {len(rep.fatal) - 1} more)" if len(rep.fatal) > 1 else ""
        raise FamfsError(f"{where}: refusing a famfs that fails fsck: {rep.fatal[0]}{more}")
    assert rep.superblock is not None
    return rep.superblock


def read_device(sysfs: Sysfs, device: str, size: int) -> tuple[L.Superblock, bytearray]:
    """Superblock and log of the unmounted device (devdax), fsck-checked."""
    from daxmode.fsdev import map_device

    with map_device(sysfs, device, writable=False) as m:
        m.sync.invalidate(m.buf, 0, L.SB_SIZE)
        head = bytes(m.buf[: L.SB_SIZE])
        problems = L.superblock_problems(head, size)
        if problems:
            raise FamfsError(f"/dev/{device}: {problems[0]}")
        sb = L.unpack_superblock(head)
        m.sync.invalidate(m.buf, L.LOG_OFFSET, sb.log_len)
        buf = _volume_bytes(head, bytes(m.buf[L.LOG_OFFSET : L.LOG_OFFSET + sb.log_len]))
    return _checked(buf, size, f"/dev/{device}"), buf


def read_mounted(mp: str, device_size: int) -> tuple[L.Superblock, bytearray]:
    """Superblock and log read through the mount's meta files (the module maps them by DAX)."""
    from daxmode import cacheflush
    from daxmode.famfs.mount.metamap import MountLog, read_superblock_via_mount

    head, sb = read_superblock_via_mount(mp, device_size)
    try:
        log = MountLog(os.path.join(mp, META, ".log"), sb.log_len, cacheflush.get())
    except OSError as e:
        raise FamfsError(f"{mp}/{META}/.log: {e.strerror}") from None
    try:
        log.invalidate(log.buf, 0, sb.log_len)
        buf = _volume_bytes(head, bytes(log.buf))
    finally:
        log.close()
    return _checked(buf, device_size, mp), buf


# --- instantiating ----------------------------------------------------------------------------------
def _create_mapped(path: str, m: A.V1Map, perm: int, uid: int, gid: int) -> None:
    """Create ``path``, hand the module its map, then set owner and mode (a file the module
    refuses is removed again, so no unmapped file is left behind)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            ioctl_map_create(fd, m)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.fchown(fd, uid, gid)
        os.fchmod(fd, perm)
    finally:
        os.close(fd)


def create_meta(mp: str, sb: L.Superblock) -> list[str]:
    """``.meta`` (0700, root) with ``.superblock`` (0444) and ``.log`` (0644 here; the log is
    written through the device by the master, never through this file)."""
    meta = os.path.join(mp, META)
    with contextlib.suppress(FileExistsError):
        os.mkdir(meta, 0o700)
    out = []
    for name, m in A.meta_maps(sb).items():
        bad = A.map_problems(m)
        if bad:
            raise FamfsError(f"{META}/{name}: {bad[0]}")
        try:
            _create_mapped(os.path.join(meta, name), m, 0o444 if name == ".superblock" else 0o644, 0, 0)
        except OSError as e:
            raise KernelRefused(f"FAMFSIOC_MAP_CREATE of {META}/{name}: {e.strerror}") from None
        out.append(f"mapped {META}/{name} ({m.size} bytes at {m.extents[0][0]:#x})")
    return out


def play_into(mp: str, buf: bytearray, sb: L.Superblock, device_size: int) -> PlayReport:
    """Create every directory and file of the log that the mount lacks, in log order.

    Every file entry passes the one extent validator (:mod:`daxmode.famfs.media.extents`: inside
    the device, clear of the superblock, the log and every earlier file, exact interleave
    geometry) as the log is played, and again just before its MAP_CREATE: a refused entry is named
    in ``refused`` and never reaches the kernel."""
    from daxmode.famfs.media.extents import require_admitted, validator_for
    from daxmode.famfs.media.log import play

    scan = scan_log(memoryview(buf)[L.LOG_OFFSET :], sb.log_len)
    validator = validator_for(sb, device_size)
    tree = play(scan.records, validator)
    rep = PlayReport(entries=scan.header.next_index)
    refused = set(validator.refused.values())
    rep.refused += list(validator.refused.values())
    rep.errors += [why for _i, why in scan.bad] + [e for e in tree.errors if e not in refused]
    for r in tree.walk():
        path = os.path.join(mp, r.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        want = stat.S_IFDIR if isinstance(r, L.DirMeta) else stat.S_IFREG
        if st is not None:
            if stat.S_IFMT(st.st_mode) != want:
                kind = "directory" if want == stat.S_IFDIR else "file"
                rep.errors.append(f"{r.path}: exists in the mount but is not a {kind}")
            else:
                rep.present += 1
            continue
        try:
            if isinstance(r, L.DirMeta):
                os.mkdir(path, 0o700)
                os.lchown(path, r.uid, r.gid)
                os.chmod(path, r.mode & 0o7777)
                rep.created_dirs.append(r.path)
                continue
            plan = A.plan_file(r)
            if isinstance(plan, str):
                rep.refused.append(f"entry {r.index} ({r.path!r}): {plan}")
                continue
            require_admitted(validator, r)
            _create_mapped(path, plan, r.mode & 0o7777, r.uid, r.gid)
            rep.created_files.append(r.path)
        except OSError as e:
            rep.errors.append(f"{r.path}: {e.strerror}")
        except FamfsError as e:
            rep.refused.append(str(e))
    return rep


# --- mount, logplay, check, umount ------------------------------------------------------------------
Restore = Callable[[Sysfs, S.MountRecord], "str | None"]
"""Puts a record's device back in its previous mode (``command.restore_mode``, passed in: the
command module imports this one)."""


def mount(sysfs: Sysfs, t: Target, mp: str, why: str, restore: Restore) -> MountResult:
    """Mount ``t`` (a dax device) at ``mp`` on the famfs module; see the module docstring."""
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.runstate.locks import device_lock

    assert t.device is not None
    steps: list[str] = []
    line = load_module(sysfs)
    if line:
        steps.append(line)
    rec = S.MountRecord(
        mp, t.source, t.device, V1, A.FSTYPE, previous_mode=t.mode, mode=MODE, phase="starting"
    )
    held = hold_mountpoint(sysfs, mp)
    S.save(sysfs, rec)
    mounted = False
    try:
        with device_lock(sysfs, t.device):
            if t.mode != MODE:
                set_mode(sysfs, t.device, Mode.parse(MODE), Options())
                steps.append(f"{t.device}: {t.mode} -> {MODE}")
            sb, buf = read_device(sysfs, t.device, t.size)
            try:
                # On the directory held and checked (no symlink, nothing mounted, empty), not on
                # its name: a path swapped meanwhile cannot redirect the mount (issue 16).
                os.close(attach(A.FSTYPE, [("source", t.source)], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, held))
            except OSError as e:
                raise KernelRefused(f"mount -t famfs {t.source} {mp}: {e.strerror}") from None
            mounted = True
            steps.append(f"mounted {t.source} at {mp} (famfs kernel module)")
            steps += create_meta(mp, sb)
            rep = play_into(mp, buf, sb, t.size)
            rec.phase = "live"
            S.save(sysfs, rec)
    except BaseException:
        if mounted:
            with contextlib.suppress(OSError):
                held.umount(MNT_DETACH)
        with contextlib.suppress(DaxmodeError):
            restore(sysfs, rec)
        S.remove(sysfs, mp)
        raise
    finally:
        held.close()
    steps += [f"refused {r}" for r in rep.refused] + [f"error: {e}" for e in rep.errors]
    steps.append(
        f"mounted {t.source} at {mp} (famfs, data path {V1}: {why}); {len(rep.created_files)} file(s), "
        f"{len(rep.created_dirs)} director(y/ies) from {rep.entries} log entries"
    )
    return MountResult(
        mp, t.source, t.device, V1, why, t.mode, MODE, 0, fstype=A.FSTYPE, steps=steps,
        files=len(rep.created_files), directories=len(rep.created_dirs), entries=rep.entries,
    )  # fmt: skip


def _live_record(sysfs: Sysfs, mountpoint: str) -> S.MountRecord:
    mp = os.path.abspath(mountpoint)
    rec = S.load(sysfs, mp)
    m = mount_at(sysfs, mp)
    if rec is None or rec.data_path != V1 or m is None or m.fstype != A.FSTYPE:
        raise FamfsError(f"{mp} is not a famfs-v1 mount made by daxmode famfs mount")
    return rec


def _device_size(sysfs: Sysfs, rec: S.MountRecord) -> int:
    from daxmode.fsdev import dax_info

    assert rec.device is not None
    return dax_info(sysfs, rec.device).size


def logplay(sysfs: Sysfs, mountpoint: str) -> PlayReport:
    """Create what the log gained since the mount (or the last logplay) in a live v1 mount."""
    rec = _live_record(sysfs, mountpoint)
    size = _device_size(sysfs, rec)
    sb, buf = read_mounted(rec.mountpoint, size)
    return play_into(rec.mountpoint, buf, sb, size)


@dataclass
class FileCheck:
    path: str
    ok: bool
    problem: str = ""
    kernel: A.V1Map | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"path": self.path, "ok": self.ok}
        if self.problem:
            d["problem"] = self.problem
        if self.kernel is not None:
            d["kernel_map"] = self.kernel.to_dict()
        return d


def check(sysfs: Sysfs, mountpoint: str) -> list[FileCheck]:
    """Each file of the log against the map the module holds for it (MAP_GET + MAP_GETEXT)."""
    from daxmode.famfs.media.extents import validator_for
    from daxmode.famfs.media.log import play

    rec = _live_record(sysfs, mountpoint)
    mp = rec.mountpoint
    size = _device_size(sysfs, rec)
    sb, buf = read_mounted(mp, size)
    validator = validator_for(sb, size)
    records = scan_log(memoryview(buf)[L.LOG_OFFSET :], sb.log_len).records
    tree = play(records, validator)
    want: list[tuple[str, A.V1Map | str]] = [(f"{META}/{n}", m) for n, m in A.meta_maps(sb).items()]
    want += [(f.path, A.plan_file(f)) for f in sorted(tree.files.values(), key=lambda f: f.index)]
    # entries the validator refused must not be in the mount at all (unless an admitted file has the path)
    for r in records:
        if not isinstance(r, L.FileMeta):
            continue
        why = validator.refused.get(r.index)
        if why is not None and r.path not in tree.files and r.path not in tree.dirs:
            want.append((r.path, why))
    out = []
    for path, plan in want:
        full = os.path.join(mp, path)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            ok = isinstance(plan, str) and e.errno == errno.ENOENT  # refused at play: absent is right
            out.append(FileCheck(path, ok, "" if ok else f"cannot open: {e.strerror}"))
            continue
        try:
            got = ioctl_map_read(fd)
        except OSError as e:
            out.append(FileCheck(path, False, f"MAP_GET/MAP_GETEXT: {e.strerror}"))
            continue
        finally:
            os.close(fd)
        if isinstance(plan, str):
            out.append(FileCheck(path, False, f"present although the log's map is refused: {plan}", got))
        elif got is None:
            out.append(FileCheck(path, False, "the kernel holds no map for it"))
        elif (got.size, got.extents) != (plan.size, plan.extents):
            why = f"kernel map {got.to_dict()} differs from the log's {plan.to_dict()}"
            out.append(FileCheck(path, False, why, got))
        else:
            out.append(FileCheck(path, True, kernel=got))
    return out


def umount(sysfs: Sysfs, rec: S.MountRecord, lazy: bool, restore: Restore) -> list[str]:
    """Unmount a v1 mount and restore the device's mode (no server to stop)."""
    steps = []
    if mount_at(sysfs, rec.mountpoint) is not None:
        try:
            with open_mountpoint(rec.mountpoint, entry=False) as held_mp:
                held_mp.umount(MNT_DETACH if lazy else 0)
        except OSError as e:
            raise umount_refused(rec.mountpoint, e) from None
        steps.append(f"unmounted {rec.mountpoint}" + (" (lazily)" if lazy else ""))
    else:
        steps.append(f"{rec.mountpoint} was no longer mounted")
    if lazy and rec.device and rec.previous_mode != MODE:
        # A detached famfs superblock keeps the device (fs_dax_get) until its last file closes;
        # unbinding device_dax under it is what oopses the kernel (docs/kernel.md): leave the mode.
        S.remove(sysfs, rec.mountpoint)
        raise LeftPartial(
            f"{rec.device} left in {MODE} mode: a lazily detached famfs-v1 mount holds it until its files "
            f"close; then: daxmode set {rec.device} {rec.previous_mode}"
        )
    line = restore(sysfs, rec)
    if line:
        steps.append(line)
    S.remove(sysfs, rec.mountpoint)
    return steps
