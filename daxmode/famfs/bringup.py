"""famfs bring-up: what the kernel and user space support, ``up`` and ``down``.

Mounting famfs needs a famfs-enabled kernel (fuse-famfs, ``CONFIG_FUSE_FAMFS_DAX``, or the older
standalone famfs v1 module) and famfs's own ``famfs`` binary (its fuse daemon does the mount).
Stock kernels, Debian's 7.3.4 included, have the fsdev_dax driver but neither famfs flavour.

Detection looks for symbol *names* in /proc/kallsyms and ignores the ``[module]`` tag: famfs's
own check requires ``[fuse]`` and so fails when fuse is built in (famfs issue #126).  It also
reads /proc/filesystems (v1 registers ``famfs``), the kernel config when it is readable, fuse's
module parameters, and modules.dep for a v1 module that is installed but not loaded.

``up`` switches the device to fsdev, formats only on request, and mounts with ``famfs mount``;
any failure puts the device back in the mode it had.  The mode it had is remembered under
/run/daxmode/famfs so ``down --restore-mode`` can return to it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

from daxmode.errors import BadMode, DaxmodeError, DeviceBusy, FamfsError, LeftPartial, RolledBack
from daxmode.famfs import layout as L
from daxmode.famfs.identity import ensure_system_uuid, read_system_uuid
from daxmode.famfs.volume import has_superblock, mkfs
from daxmode.fsdev import dax_info, map_device, mounted_at
from daxmode.kernel import locks
from daxmode.kernel.devices import resolve_name
from daxmode.sysfs import Sysfs

# Non-static functions of fs/fuse/famfs.c in the fuse-famfs patch series (famfs_file_init_dax,
# famfs_fuse_iomap_begin, the fileofs->daxofs resolvers); famfs v1 (fs/famfs) has famfs_create.
FUSE_FAMFS_SYMBOLS = frozenset(
    {
        "famfs_fuse_iomap_begin",
        "famfs_file_init_dax",
        "famfs_fileofs_to_daxofs",
        "famfs_interleave_fileofs_to_daxofs",
        "famfs_fuse_meta_free",
        "famfs_teardown",
    }
)
V1_SYMBOLS = frozenset({"famfs_create", "famfs_fill_super", "famfs_file_ioctl"})
STATE_DIR = "run/daxmode/famfs"


@dataclass
class KernelSupport:
    release: str = ""
    fuse_famfs: bool = False
    famfs_v1: bool = False
    v1_module_installed: bool = False
    fsdev_driver: bool = False
    kallsyms_readable: bool = False
    evidence: list[str] = field(default_factory=list)

    @property
    def mountable(self) -> bool:
        return self.fuse_famfs or self.famfs_v1 or self.v1_module_installed


@dataclass
class Tools:
    famfs: str | None
    famfs_fused: str | None
    mkfs_famfs: str | None


def _read(sysfs: Sysfs, rel: str) -> str | None:
    try:
        return sysfs.read(rel)
    except DaxmodeError:
        return None


def detect_kernel(sysfs: Sysfs) -> KernelSupport:
    ks = KernelSupport(release=(_read(sysfs, "proc/sys/kernel/osrelease") or "").strip())
    syms = _read(sysfs, "proc/kallsyms")
    if syms:
        ks.kallsyms_readable = True
        for line in syms.splitlines():
            parts = line.split()
            if len(parts) < 3 or "famfs" not in parts[2]:
                continue
            name = parts[2]
            if name in FUSE_FAMFS_SYMBOLS:
                if not ks.fuse_famfs:
                    ks.evidence.append(f"kallsyms: {name} {' '.join(parts[3:]) or '(built in)'}")
                ks.fuse_famfs = True
            elif name in V1_SYMBOLS or (len(parts) > 3 and parts[3] in ("[famfs]", "[famfsv1]")):
                if not ks.famfs_v1:
                    ks.evidence.append(f"kallsyms: {name} {' '.join(parts[3:]) or '(built in)'}")
                ks.famfs_v1 = True
    filesystems = _read(sysfs, "proc/filesystems") or ""
    if any(line.split()[-1:] == ["famfs"] for line in filesystems.splitlines()):
        ks.famfs_v1 = True
        ks.evidence.append("/proc/filesystems lists famfs")
    params = sysfs.listdir("sys/module/fuse/parameters")
    famfs_params = [p for p in params if "famfs" in p]
    if famfs_params:
        ks.fuse_famfs = True
        ks.evidence.append(f"fuse module parameters: {', '.join(famfs_params)}")
    config = _kernel_config(sysfs, ks.release)
    if config:
        for opt, what in (
            ("CONFIG_FUSE_FAMFS_DAX", "fuse"),
            ("CONFIG_FAMFSV1", "v1"),
            ("CONFIG_FAMFS", "v1"),
        ):
            val = config.get(opt)
            if val in ("y", "m"):
                ks.evidence.append(f"kernel config: {opt}={val}")
                if what == "fuse":
                    ks.fuse_famfs = True
                elif val == "m":
                    ks.v1_module_installed = True
                else:
                    ks.famfs_v1 = True
    deps = _read(sysfs, f"lib/modules/{ks.release}/modules.dep") if ks.release else None
    for line in (deps or "").splitlines():
        base = os.path.basename(line.split(":", 1)[0]).split(".ko")[0]
        if base in ("famfs", "famfsv1"):
            ks.v1_module_installed = True
            ks.evidence.append(f"modules.dep: {base} module installed")
            break
    ks.fsdev_driver = sysfs.exists("sys/bus/dax/drivers/fsdev_dax") or bool(deps and "fsdev_dax.ko" in deps)
    return ks


def _kernel_config(sysfs: Sysfs, release: str) -> dict[str, str]:
    text = None
    gz = sysfs.path("proc/config.gz")
    if os.path.exists(gz):
        try:
            with gzip.open(gz, "rt") as f:
                text = f.read()
        except OSError:
            text = None
    if text is None and release:
        text = _read(sysfs, f"boot/config-{release}")
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def find_tools() -> Tools:
    famfs = shutil.which("famfs")
    fused = None
    if famfs:
        cand = os.path.join(os.path.dirname(os.path.realpath(famfs)), "famfs_fused")
        fused = cand if os.access(cand, os.X_OK) else None
    return Tools(famfs, fused, shutil.which("mkfs.famfs"))


def missing_for_mount(ks: KernelSupport, tools: Tools) -> list[str]:
    """Plain-words reasons a famfs mount cannot happen here; [] when it can."""
    out = []
    if not ks.mountable:
        why = f"the running kernel ({ks.release or 'unknown'}) has no famfs support: neither fuse-famfs "
        why += "(CONFIG_FUSE_FAMFS_DAX) nor the famfs v1 module; boot a famfs-patched kernel"
        if not ks.kallsyms_readable:
            why += " (note: /proc/kallsyms was not readable; run as root for a definite answer)"
        out.append(why)
    if tools.famfs is None:
        out.append(
            "famfs's user-space tools are not installed (no `famfs` on PATH); "
            "build them from famfs's repository"
        )
    elif ks.fuse_famfs and not ks.famfs_v1 and tools.famfs_fused is None:
        out.append(f"famfs_fused is missing next to {tools.famfs}; fuse mounts need it")
    return out


def status(sysfs: Sysfs) -> dict[str, object]:
    """Kernel support, tools, host role and every dax device's mode, without changing anything."""
    from daxmode.kernel.devices import find_devices

    ks = detect_kernel(sysfs)
    tools = find_tools()
    devices = []
    for dev in find_devices(sysfs):
        d: dict[str, object] = {"device": dev.name, "mode": dev.mode_name, "size": dev.size}
        where = mounted_at(sysfs, dev.name)
        if where:
            d["mounted_at"] = where
        if dev.mode_name == "devdax" and not where:
            d["famfs"] = _peek(sysfs, dev.name)
        elif dev.mode_name == "fsdev":
            d["famfs"] = "unknown (fsdev devices cannot be read without switching to devdax)"
        devices.append(d)
    sysuuid = read_system_uuid(sysfs)
    return {
        "kernel": asdict(ks) | {"mountable": ks.mountable},
        "tools": asdict(tools),
        "system_uuid": str(sysuuid) if sysuuid else None,
        "missing_for_mount": missing_for_mount(ks, tools),
        "devices": devices,
    }


def _peek(sysfs: Sysfs, name: str) -> str:
    try:
        with map_device(sysfs, name, writable=False) as m:
            if not has_superblock(m.buf):
                return "no famfs superblock"
            sb = L.unpack_superblock(memoryview(m.buf)[: L.SB_SIZE])
            me = read_system_uuid(sysfs)
            role = "master" if me == sb.system_uuid else "client"
            return f"famfs v{sb.version}, uuid {sb.uuid}, this host is {role}"
    except DaxmodeError as e:
        return f"unreadable: {e}"


# --- up / down ------------------------------------------------------------------------------
@dataclass
class UpResult:
    device: str
    mountpoint: str
    previous_mode: str
    formatted: bool
    mounted: bool
    steps: list[str] = field(default_factory=list)


def _state_path(sysfs: Sysfs, mountpoint: str) -> str:
    key = os.path.abspath(mountpoint).strip("/").replace("/", "_") or "root"
    return str(sysfs.path(f"{STATE_DIR}/{key}.json"))


def up(
    sysfs: Sysfs,
    device: str,
    mountpoint: str,
    *,
    format: bool = False,
    mount: bool = True,
    log_len: int = L.DEFAULT_LOG_LEN,
    version: int = L.DEFAULT_VERSION,
) -> UpResult:
    """Bring famfs up on ``device``: (format), fsdev mode, ``famfs mount``.  Failure restores the mode."""
    from daxmode.modes import Mode, Options, set_mode

    name = resolve_name(sysfs, device)
    info = dax_info(sysfs, name)
    where = mounted_at(sysfs, name)
    if where:
        raise DeviceBusy(f"{name} is already mounted at {', '.join(where)}")
    tools = find_tools()
    if mount:
        missing = missing_for_mount(detect_kernel(sysfs), tools)
        if missing:
            raise FamfsError(
                f"cannot mount famfs on {name}: {missing[0]} (nothing was changed; --no-mount prepares only)"
            )
    if info.mode not in ("devdax", "fsdev"):
        raise BadMode(
            f"{name} is in {info.mode or 'no'} mode; switch it to devdax first (daxmode set {name} devdax)"
        )
    res = UpResult(name, os.path.abspath(mountpoint), info.mode, False, False)
    try:
        with map_device(sysfs, name, writable=format) as m:
            if not has_superblock(m.buf):
                if not format:
                    raise FamfsError(f"{name} has no famfs superblock; use --format to create one")
                mk = mkfs(m, ensure_system_uuid(sysfs), log_len=log_len, version=version)
                res.formatted = True
                res.steps.append(
                    f"formatted {name} (famfs v{mk.superblock.version}, uuid {mk.superblock.uuid})"
                )
                res.steps += mk.warnings
            else:
                problems = L.superblock_problems(memoryview(m.buf)[: L.SB_SIZE], m.size)
                if problems:
                    raise FamfsError(f"{name}: {problems[0]}")
        if info.mode != "fsdev":
            set_mode(sysfs, name, Mode.FSDEV, Options())
            res.steps.append(f"{name}: devdax -> fsdev")
        if mount:
            os.makedirs(mountpoint, exist_ok=True)
            ks = detect_kernel(sysfs)
            flag = "--fuse" if ks.fuse_famfs else "--nofuse"
            assert tools.famfs is not None
            proc = subprocess.run(
                [tools.famfs, "mount", flag, f"/dev/{name}", mountpoint],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[
                    -1
                ]
                raise FamfsError(f"famfs mount failed: {last}")
            res.mounted = True
            res.steps.append(f"mounted {name} at {res.mountpoint} ({flag[2:]})")
    except DaxmodeError as e:
        _restore(sysfs, name, info.mode, e)
        raise
    _save_state(sysfs, res)
    return res


def _restore(sysfs: Sysfs, name: str, mode: str, cause: Exception) -> None:
    from daxmode.modes import Mode, Options, set_mode

    try:
        now = dax_info(sysfs, name).mode
        if now == mode:
            return
        set_mode(sysfs, name, Mode.parse(mode), Options())
    except DaxmodeError as e2:
        raise LeftPartial(
            f"{cause}; restoring {name} to {mode} also failed ({e2}); it is in {now} mode"
        ) from None
    raise RolledBack(f"{cause}; {name} was returned to {mode} mode") from None


def _save_state(sysfs: Sysfs, res: UpResult) -> None:
    path = _state_path(sysfs, res.mountpoint)
    try:
        os.close(locks.open_run_dir(sysfs))  # run/daxmode: created 0700 and checked
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            json.dump(
                {"device": res.device, "mountpoint": res.mountpoint, "previous_mode": res.previous_mode}, f
            )
    except OSError:
        pass  # only --restore-mode needs it, and it says so when it is missing


def down(sysfs: Sysfs, mountpoint: str, *, restore_mode: bool = False) -> list[str]:
    """Unmount a famfs mount; with ``restore_mode`` return its device to the mode it had before ``up``."""
    from daxmode.kernel.mounts import parse_mountinfo
    from daxmode.modes import Mode, Options, set_mode

    mp = os.path.abspath(mountpoint)
    text = _read(sysfs, "proc/self/mountinfo") or ""
    mounts = [m for m in parse_mountinfo(text) if m.mount_point == mp]
    state_file = _state_path(sysfs, mp)
    state = None
    if os.path.exists(state_file):
        try:
            with open(state_file) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
    steps = []
    device = state["device"] if state else None
    if mounts:
        device = device or mounts[0].source.removeprefix("/dev/")
        proc = subprocess.run(["umount", mp], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DeviceBusy(f"umount {mp} failed: {proc.stderr.strip() or proc.returncode}")
        steps.append(f"unmounted {mp}")
    elif state is None:
        raise FamfsError(f"{mp} is not a famfs mount and no `famfs up` record exists for it")
    else:
        steps.append(f"{mp} was not mounted")
    if restore_mode:
        if not state or not device:
            raise FamfsError(
                f"no record of the mode {device or 'the device'} had before `famfs up`; left as is"
            )
        prev = state["previous_mode"]
        if dax_info(sysfs, device).mode != prev:
            set_mode(sysfs, device, Mode.parse(prev), Options())
            steps.append(f"{device}: returned to {prev} mode")
    if state is not None:
        os.unlink(state_file)
    return steps
