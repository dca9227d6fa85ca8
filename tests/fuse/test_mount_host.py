"""Real FUSE mounts on this host: famfs image files (and simulated dax devices) through /dev/fuse.

These need root and /dev/fuse (the build machines have both); without them every test here is
skipped with that reason.  Results are read from the mounted files, /proc/self/mountinfo and the
image itself, not from daxmode's output.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daxmode.famfs import Volume
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.famfs.mount import records as S
from daxmode.fsdev import create_image, map_image
from daxmode.kernel.mounts import mount_uses, parse_mountinfo
from daxmode.sysfs import Sysfs

MiB = 1 << 20
DAXMODE = str(Path(sys.executable).parent / "daxmode")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0,
    reason="real FUSE mounts need /dev/fuse and root (this host has "
    + ("no /dev/fuse" if not os.path.exists("/dev/fuse") else "no root")
    + ")",
)


def mountinfo_line(mp: str) -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == mp:
            return line
    return None


class World:
    """A daxmode root (real /proc, its own /run and /opt/famfs), a world-readable mount point, an image."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.root.mkdir()
        os.symlink("/proc", self.root / "proc")
        self.sysfs = Sysfs(self.root)
        self.me = ensure_system_uuid(self.sysfs)
        self.img = base / "famfs.img"
        create_image(self.img, 256 * MiB)
        self.mnt = base / "mnt"
        self.mnt.mkdir()

    def dx(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [DAXMODE, "--root", str(self.root), *args], capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert r.returncode == 0, f"daxmode {' '.join(args)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def famfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.dx("famfs", *args, check=check)

    def record(self) -> S.MountRecord | None:
        return S.load(self.sysfs, str(self.mnt))

    def volume(self) -> Iterator[Volume]:
        with map_image(self.img) as m:
            v = Volume(m, self.me)
            try:
                yield v
            finally:
                v.close()


@pytest.fixture
def w() -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="daxmode-fuse-"))
    os.chmod(base, 0o755)  # nobody must reach the mount point
    world = World(base)
    try:
        yield world
    finally:
        if mountinfo_line(str(world.mnt)):
            rec = world.record()
            if rec and S.server_alive(rec):
                os.kill(rec.pid, signal.SIGKILL)
            subprocess.run(["umount", "-l", str(world.mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def make_fs(w: World) -> bytes:
    data = os.urandom(3 * MiB + 4097)
    src = w.base / "src.bin"
    src.write_bytes(data)
    w.famfs("mkfs", str(w.img))
    w.famfs("mkdir", str(w.img), "shared")
    w.famfs("mkdir", str(w.img), "priv", "-m", "0700", "-u", "1000", "-g", "1000")
    w.famfs("cp", str(w.img), str(src), "shared/data.bin", "-m", "0644")
    w.famfs("creat", str(w.img), "priv/secret", "-s", "8192", "-m", "0600", "-u", "1000", "-g", "1000")
    return data


def as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    return subprocess.run(list(cmd), capture_output=True, text=True, preexec_fn=drop, timeout=30)


def test_mount_read_write_new_files_and_refusals(w: World) -> None:
    data = make_fs(w)
    r = w.famfs("mount", str(w.img), str(w.mnt))
    assert "data path copy" in r.stdout and r.stderr == ""
    line = mountinfo_line(str(w.mnt))
    assert line is not None
    m = parse_mountinfo(line)[0]
    assert m.fstype == "fuse.famfs" and m.source == str(w.img)
    assert "allow_other" in m.super_options and "default_permissions" in m.super_options
    mnt = w.mnt
    # read back identical: cat | sha256sum, and Python mmap
    out = subprocess.run(f"cat {mnt}/shared/data.bin | sha256sum", shell=True, capture_output=True, text=True)
    assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    with open(mnt / "shared/data.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == data
    assert sorted(os.listdir(mnt)) == [".meta", "priv", "shared"]
    assert os.stat(mnt / ".meta/.log").st_size == 8 * MiB
    # a write through the mount lands on the medium
    with open(mnt / "shared/data.bin", "r+b") as f:
        f.seek(4096)
        f.write(b"written through the mount")
    with contextlib.contextmanager(w.volume)() as v:
        meta = v.lookup_file("shared/data.bin")
        assert v.read(meta, 4096, 25) == b"written through the mount"
    # shared writable mmap works too (FUSE_DIRECT_IO_ALLOW_MMAP) and reaches the medium by msync
    with open(mnt / "shared/data.bin", "r+b") as f, mmap.mmap(f.fileno(), 2 * MiB) as mm:
        mm[100:105] = b"MMAP!"
        mm.flush()
    with contextlib.contextmanager(w.volume)() as v:
        assert v.read(v.lookup_file("shared/data.bin"), 100, 5) == b"MMAP!"
    # files never grow
    fd = os.open(mnt / "shared/data.bin", os.O_WRONLY | os.O_APPEND)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"more")
        assert e.value.errno == errno.EFBIG
        os.lseek(fd, len(data) - 2, os.SEEK_SET)
    finally:
        os.close(fd)
    # a file created after mounting appears without a remount
    later = w.base / "later.txt"
    later.write_bytes(b"hello from later\n")
    assert not (mnt / "shared/later.txt").exists()
    w.famfs("cp", str(w.img), str(later), "shared/later.txt")
    assert (mnt / "shared/later.txt").read_bytes() == b"hello from later\n"
    assert "later.txt" in os.listdir(mnt / "shared")
    # famfs semantics: no unlink, truncate, rename, create, mkdir, chmod
    for fn in (
        lambda: os.unlink(mnt / "shared/data.bin"),
        lambda: os.truncate(mnt / "shared/data.bin", 0),
        lambda: open(mnt / "shared/data.bin", "wb"),  # noqa: SIM115
        lambda: os.rename(mnt / "shared/data.bin", mnt / "shared/x"),
        lambda: open(mnt / "shared/new", "wb"),  # noqa: SIM115
        lambda: os.mkdir(mnt / "newdir"),
        lambda: os.chmod(mnt / "shared/data.bin", 0o777),
    ):
        with pytest.raises(PermissionError):
            fn()
    assert os.stat(mnt / "shared/data.bin").st_size == len(data)
    r = subprocess.run(["rm", "-f", f"{mnt}/shared/data.bin"], capture_output=True, text=True)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    # the kernel enforces the log's modes: nobody reads the 0644 file, not the 0700 directory of uid 1000
    r = as_nobody("sha256sum", f"{mnt}/shared/data.bin")
    assert r.returncode == 0, r.stderr
    r = as_nobody("ls", f"{mnt}/priv")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_nobody("cat", f"{mnt}/priv/secret")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    st = os.stat(mnt / "priv")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o700, 1000, 1000)
    # the server's counters, through the mount
    import json

    stats = json.loads(os.getxattr(mnt, "user.daxmode.stats"))
    assert stats["data_path"] == "copy" and stats["server"]["read_bytes"] >= len(data)
    r = w.famfs("status", "--json")
    assert json.loads(r.stdout)["mounts"][0]["data_path"] == "copy"
    # a second mount of the same image is refused
    other = w.base / "mnt2"
    other.mkdir()
    r = w.famfs("mount", str(w.img), str(other), check=False)
    assert r.returncode == 7 and "already mounted" in r.stderr
    r = w.famfs("umount", str(mnt))
    assert "unmounted" in r.stdout and mountinfo_line(str(mnt)) is None and w.record() is None


def test_bad_mountpoints_and_targets(w: World) -> None:
    make_fs(w)
    cases = [
        (str(w.base / "missing"), "does not exist"),
        (str(w.img), "not a directory"),
        ("/proc", "already a mount point"),
    ]
    full = w.base / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases.append((str(full), "not empty"))
    for mp, why in cases:
        r = w.famfs("mount", str(w.img), mp, check=False)
        assert r.returncode == 11 and why in r.stderr, (mp, r.stderr)
        assert r.stderr.startswith("daxmode: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = w.famfs("mount", "dax9.9", str(w.mnt), check=False)
    assert r.returncode == 3 and "no dax device 'dax9.9'" in r.stderr
    r = w.famfs("mount", str(w.base / "nope.img"), str(w.mnt), check=False)
    assert r.returncode == 11
    r = w.famfs("umount", str(w.mnt), check=False)
    assert r.returncode == 11 and "is not mounted" in r.stderr
    # a log that fails fsck is refused, naming fsck's first problem
    with open(w.img, "r+b") as f:
        f.seek(2 * MiB + 3)
        f.write(b"\xff")
    r = w.famfs("mount", str(w.img), str(w.mnt), check=False)
    assert r.returncode == 12 and "fails fsck: log header field famfs_log_magic" in r.stderr
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None


def _wait(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_then_umount_cleans_up(w: World) -> None:
    make_fs(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    rec = w.record()
    assert rec is not None and rec.phase == "live" and S.server_alive(rec)
    os.kill(rec.pid, signal.SIGKILL)
    assert _wait(lambda: not S.server_alive(rec))
    with pytest.raises(OSError) as e:
        os.listdir(w.mnt)
    assert e.value.errno == errno.ENOTCONN
    r = w.famfs("umount", str(w.mnt))
    assert "was not running" in r.stdout and f"unmounted {w.mnt}" in r.stdout
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None
    w.famfs("mount", str(w.img), str(w.mnt))  # and it mounts again
    w.famfs("umount", str(w.mnt))


def test_sigterm_unmounts_cleanly_and_busy_umount(w: World) -> None:
    make_fs(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    f = open(w.mnt / "shared/data.bin", "rb")  # noqa: SIM115
    r = w.famfs("umount", str(w.mnt), check=False)
    assert r.returncode == 7 and "busy" in r.stderr and "--lazy" in r.stderr
    assert f.read(4) and mountinfo_line(str(w.mnt)) is not None  # still serving
    f.close()
    rec = w.record()
    assert rec is not None
    os.kill(rec.pid, signal.SIGTERM)
    assert _wait(lambda: mountinfo_line(str(w.mnt)) is None and not S.server_alive(rec))
    assert w.record() is None
    # lazy: detach now, the server serves the open file and goes when it is closed
    w.famfs("mount", str(w.img), str(w.mnt))
    rec = w.record()
    assert rec is not None
    f = open(w.mnt / "shared/data.bin", "rb")  # noqa: SIM115
    r = w.famfs("umount", str(w.mnt), "--lazy")
    assert "lazily" in r.stdout and mountinfo_line(str(w.mnt)) is None
    assert len(f.read()) > 3 * MiB and S.server_alive(rec)
    f.close()
    assert _wait(lambda: not S.server_alive(rec))
    assert w.record() is None


def test_foreground_mount(w: World) -> None:
    make_fs(w)
    p = subprocess.Popen(
        [DAXMODE, "--root", str(w.root), "famfs", "mount", str(w.img), str(w.mnt), "--foreground"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # "server pid" is printed once set-up is over: a signal before that rolls the mount back
        assert p.stdout is not None
        ready: list[str] = []
        while not (ready and ready[-1].startswith("server pid")):
            line = p.stdout.readline()
            assert line, f"the server exited before it was ready: {ready}"
            ready.append(line)
        assert mountinfo_line(str(w.mnt)) is not None and (w.mnt / "shared").exists()
        assert (w.mnt / "shared/data.bin").stat().st_size == 3 * MiB + 4097
        p.send_signal(signal.SIGINT)
        out, _err = p.communicate(timeout=30)
        out = "".join(ready) + out
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "server pid" in out
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None


# --- a simulated dax device: the mode manager's part, with the mount real ------------------------
@pytest.fixture
def simdev(w: World):  # type: ignore[no-untyped-def]
    from daxmode import sim

    s = sim.standard(w.base / "sim", blocks=4)
    size = int(s.p("sys/bus/dax/devices/dax0.0/size").read_text())
    os.truncate(s.p("dev/dax0.0"), size)
    # The simulated kernel's mountinfo is the real one, so the mode manager sees the real mount.
    s.p("proc/self/mountinfo").unlink()
    os.symlink("/proc/self/mountinfo", s.p("proc/self/mountinfo"))
    ensure_system_uuid(s.sysfs())
    return s


def test_device_mode_switched_held_and_restored(w: World, simdev) -> None:  # type: ignore[no-untyped-def]
    s = simdev
    root = str(s.root)

    def dx(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([DAXMODE, "--root", root, "--sim", *a], capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, f"daxmode {' '.join(a)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    dx("famfs", "mkfs", "dax0.0")
    dx("set", "dax0.0", "fsdev")
    assert s.driver("dax0.0") == "fsdev_dax"
    r = dx("famfs", "mount", "dax0.0", str(w.mnt))
    assert "dax0.0: fsdev -> devdax" in r.stdout and "data path copy" in r.stdout
    assert s.driver("dax0.0") == "device_dax"  # the copy path serves from a devdax mapping
    line = mountinfo_line(str(w.mnt))
    assert line is not None
    m = parse_mountinfo(line)[0]
    assert m.source == "/dev/dax0.0" and m.fstype == "fuse.famfs" and mount_uses(m, "dax0.0")
    r = dx("set", "dax0.0", "system-ram", check=False)
    assert r.returncode == 7 and f"mounted on {w.mnt}" in r.stderr
    # famfs creat/cp while mounted: the CLI maps the devdax device too; the mount sees the file
    src = w.base / "f.txt"
    src.write_text("while mounted\n")
    r = dx("famfs", "cp", "dax0.0", str(src), "f.txt")
    assert "the mount sees these changes" in r.stderr
    assert (w.mnt / "f.txt").read_text() == "while mounted\n"
    rec = S.load(Sysfs(s.root), str(w.mnt))
    assert rec is not None and (rec.previous_mode, rec.mode, rec.data_path) == ("fsdev", "devdax", "copy")
    os.kill(rec.pid, signal.SIGKILL)  # the server dies: umount must still restore fsdev
    assert _wait(lambda: not S.server_alive(rec))
    r = dx("famfs", "umount", str(w.mnt))
    assert "dax0.0: devdax -> fsdev (its mode before the mount)" in r.stdout
    assert s.driver("dax0.0") == "fsdev_dax" and mountinfo_line(str(w.mnt)) is None
    # a clean mount/umount from devdax leaves it in devdax
    dx("set", "dax0.0", "devdax")
    dx("famfs", "mount", "dax0.0", str(w.mnt))
    r = dx("famfs", "umount", str(w.mnt))
    assert s.driver("dax0.0") == "device_dax" and "server" in r.stdout


# --- the dax data path's orchestration, on a stock kernel ------------------------------------------
class _FakeDaxFuse:
    """Stands in for a famfs kernel's side of the dax path: this host's kernel sends READ/WRITE
    instead of mapping files, so the handlers serve them from the simulated device's memory file.
    Everything else (mode switches, reading metadata through the mount, the CLI's MountMapping,
    umount) is the real dax-path code."""

    devfile = ""

    def __new__(cls, ns, data_path, *, daxdev=None, stats=None, info=None):  # type: ignore[no-untyped-def]
        from daxmode.cacheflush import NoSync
        from daxmode.famfs.mount.handlers import COPY, Device, FamfsFuse
        from daxmode.fuse import proto as P

        assert data_path == "dax" and daxdev
        fd = os.open(cls.devfile, os.O_RDWR)
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, size)
        os.close(fd)
        fs = FamfsFuse(ns, COPY, device=Device(memoryview(buf), NoSync(), size), stats=stats, info=info)
        fs.data_path = "dax"
        fs.daxdev = daxdev
        real_init = fs.init

        def init(req: P.InitIn) -> P.InitOut:  # the kernel "offered" FUSE_DAX_FMAP
            out = real_init(req._replace(flags=req.flags | P.DAX_FMAP))
            return out._replace(flags=out.flags & ~P.DAX_FMAP)  # this kernel does not know the bit

        fs.init = init  # type: ignore[method-assign]
        real_handlers = fs.handlers

        def handlers():  # type: ignore[no-untyped-def]
            h = real_handlers()
            h[P.GET_FMAP] = fs.get_fmap
            h[P.GET_DAXDEV] = fs.get_daxdev
            return h

        fs.handlers = handlers  # type: ignore[method-assign]
        return fs


def test_dax_path_orchestration_with_a_stand_in_kernel(
    w: World, simdev, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import json

    from daxmode.famfs.mount import command as M
    from daxmode.famfs.mount import server as mountserver

    s = simdev
    sysfs = s.sysfs()
    _FakeDaxFuse.devfile = str(s.p("dev/dax0.0"))
    monkeypatch.setattr(mountserver, "FamfsFuse", _FakeDaxFuse)
    monkeypatch.setattr(M, "choose_data_path", lambda sysfs, t, requested: ("dax", "stand-in famfs kernel"))
    # Cache invalidation touches a mapping of the mount: on this page-cache kernel that would fault
    # into the server itself (a real famfs kernel maps by DAX and never asks).
    from daxmode import cacheflush

    monkeypatch.setattr(cacheflush, "get", lambda: cacheflush.NoSync("stand-in kernel"))
    root = str(s.root)

    def dx(*a: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([DAXMODE, "--root", root, "--sim", *a], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (a, r.stderr)
        return r

    data = os.urandom(5 * MiB + 3)
    src = w.base / "d.bin"
    src.write_bytes(data)
    dx("famfs", "mkfs", "dax0.0")
    dx("famfs", "cp", "dax0.0", str(src), "d.bin")
    # from devdax: read the log, switch to fsdev, mount, then read the metadata through the mount
    res = M.mount(sysfs, "dax0.0", str(w.mnt))
    assert res.data_path == "dax" and "dax0.0: devdax -> fsdev" in res.steps and res.files == 1
    assert s.driver("dax0.0") == "fsdev_dax"
    assert (w.mnt / "d.bin").read_bytes() == data
    rec = S.load(sysfs, str(w.mnt))
    assert rec is not None and (rec.data_path, rec.previous_mode, rec.mode) == ("dax", "devdax", "fsdev")
    # the CLI reaches an fsdev device through the mount (MountMapping), and the mount sees the result
    later = w.base / "later.bin"
    later.write_bytes(os.urandom(3 * MiB))
    r = dx("famfs", "cp", "dax0.0", str(later), "later.bin")
    assert "metadata and data go through the mount" in r.stderr
    assert (w.mnt / "later.bin").read_bytes() == later.read_bytes()
    assert json.loads(dx("famfs", "ls", "dax0.0", "--json").stdout)[1]["path"] == "later.bin"
    stats = json.loads(os.getxattr(w.mnt, "user.daxmode.stats"))
    assert stats["data_path"] == "dax"
    # umount: the server drops its own mapping of the log (it keeps the mount busy), unmounts, restores
    steps = M.umount(sysfs, str(w.mnt)).lines()
    assert "dax0.0: fsdev -> devdax (its mode before the mount)" in steps, steps
    assert s.driver("dax0.0") == "device_dax" and mountinfo_line(str(w.mnt)) is None
    # from fsdev: nothing to switch; the superblock and log are read through the mount only
    dx("set", "dax0.0", "fsdev")
    res = M.mount(sysfs, "dax0.0", str(w.mnt))
    assert res.files == 2 and not [x for x in res.steps if "->" in x]
    assert (w.mnt / "later.bin").read_bytes() == later.read_bytes()
    # kill -9 while the server holds .meta/.log of its own mount: it must still exit (no FLUSH to
    # wait for), and umount cleans up after it
    rec = S.load(sysfs, str(w.mnt))
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    assert _wait(lambda: not S.server_alive(rec), 20), "the killed server did not exit"
    steps = M.umount(sysfs, str(w.mnt)).lines()
    assert any("was not running" in x for x in steps) and mountinfo_line(str(w.mnt)) is None
    assert s.driver("dax0.0") == "fsdev_dax"


def test_init_probe_on_this_kernel(tmp_path: Path) -> None:
    from daxmode.famfs.mount.attach import probe_init

    p = probe_init(str(tmp_path / "probe"))
    assert p.minor >= 39 and p.direct_io_allow_mmap  # 6.6+ kernels offer FUSE_DIRECT_IO_ALLOW_MMAP
    assert os.listdir(tmp_path / "probe") == []  # the throw-away mount point is gone
    assert "daxmode-probe" not in Path("/proc/self/mountinfo").read_text()
