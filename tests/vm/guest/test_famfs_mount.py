"""In-guest, real kernel: ``daxmode famfs mount`` on the harness's dax device, read back for real.

On a stock kernel (Debian 7.3.4) the mount uses the copy data path: the device goes to devdax and
the server serves READ/WRITE from its mapping.  On a famfs kernel it uses the dax data path (device
in fsdev, files mapped by the kernel).  Nothing about the mount is skipped on either.  On the
standalone famfs kernel (6.12, no fsdev mode) the server is asked for the copy path; the start from
fsdev is skipped there (declared), and the famfs-v1 path has its own tests (test_famfs_v1.py).

Results are read from the mounted files (cat, sha256sum, Python mmap), /proc/self/mountinfo, sysfs
(the driver link) and the device itself (a raw devdax mapping at the extent the log records), not
from daxmode's output.  Most daxmode calls run in-process (click's runner): Python start-up costs
10-14 s under TCG; real processes are used where the process is the point (the mount command
returning while its server runs on, kill -9 of the server, another user reading the mount).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daxmode.cli import main

from .sysview import driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BUS = Path("/sys/bus/dax")
MNT = Path("/mnt/daxmode-famfs")
DATA_SIZE = 3 * 1024 * 1024 + 4097
SEED = 20261201

pytestmark = [
    pytest.mark.guest,
    pytest.mark.shared_media,  # mkfs and writes on the device other hosts share: one host at a time
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]


def dx(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def ok(*args: str) -> str:
    rc, out, err = dx(*args)
    assert rc == 0, f"daxmode {' '.join(args)}: rc {rc}\n{out}\n{err}"
    return out


def server_path() -> list[str]:
    """These tests are about daxmode's FUSE server.  On the standalone famfs kernel ``auto`` takes
    the famfs-v1 path, where the kernel serves the files and no server runs (test_famfs_v1.py), so
    the server's copy path is asked for there."""
    status = json.loads(ok("famfs", "status", "--json"))
    return ["--data-path", "copy"] if status["kernel"]["data_path"] == "famfs-v1" else []


def mountinfo(mp: Path = MNT) -> list[str] | None:
    """The mountinfo fields of the mount on ``mp`` (after the '-': fstype, source, options)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == str(mp):
            return f[f.index("-") + 1 :]
    return None


def record() -> dict:
    from urllib.parse import quote

    return json.loads(Path(f"/run/daxmode/mounts/{quote(str(MNT), safe='')}.json").read_text())


def wait(pred, timeout: float = 120.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def as_nobody(cmd: str) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, preexec_fn=drop, timeout=300)


def extent_of(path: str) -> tuple[int, int]:
    """(device offset, length) of a file's first extent, read from the log on the device."""
    from daxmode.famfs.medium import open_famfs

    with open_famfs(DEV) as fs:
        m = fs.volume.lookup_file(path)
        return m.extents[0][1], m.extents[0][2]


@pytest.fixture(scope="module")
def famfs_on_device(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    assert driver() == "device_dax", "the harness hands over the device in devdax"
    data = random.Random(SEED).randbytes(DATA_SIZE)
    src = tmp_path_factory.mktemp("src") / "data.bin"
    src.write_bytes(data)
    ok("famfs", "mkfs", DEV, "--force")
    ok("famfs", "mkdir", DEV, "shared")
    ok("famfs", "mkdir", DEV, "priv", "-m", "0700", "-u", "1000", "-g", "1000")
    ok("famfs", "cp", DEV, str(src), "shared/data.bin", "-m", "0644")
    ok("famfs", "creat", DEV, "priv/secret", "-s", "8192", "-m", "0600", "-u", "1000", "-g", "1000")
    MNT.mkdir(parents=True, exist_ok=True)
    os.chmod(MNT.parent, 0o755)
    yield data
    if mountinfo() is not None:
        subprocess.run(["umount", "-l", str(MNT)], check=False)
    if driver() != "device_dax":
        ok("set", DEV, "devdax")


def test_mount_read_write_refuse_kill(famfs_on_device: bytes) -> None:
    data = famfs_on_device
    # the mount command returns once the mount is live; its server runs on (a real process here)
    r = subprocess.run(
        [sys.executable, "-m", "daxmode", "famfs", "mount", DEV, str(MNT), *server_path()],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    mi = mountinfo()
    assert mi is not None and mi[0] == "fuse.famfs" and mi[1] == f"/dev/{DEV}", mi
    assert "allow_other" in mi[2] and "default_permissions" in mi[2]
    path = json.loads(os.getxattr(MNT, "user.daxmode.stats"))["data_path"]
    assert driver() == ("fsdev_dax" if path == "dax" else "device_dax")
    # read back identical through the mount: cat | sha256sum and Python mmap
    out = subprocess.run(f"cat {MNT}/shared/data.bin | sha256sum", shell=True, capture_output=True, text=True)
    assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    with open(MNT / "shared/data.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert hashlib.sha256(mm[:]).digest() == hashlib.sha256(data).digest()
    # a write through the mount lands on the device
    msg = f"written through the mount on {os.uname().nodename}".encode()
    with open(MNT / "shared/data.bin", "r+b") as f:
        f.seek(8192)
        f.write(msg)
    if path == "copy":  # the device is devdax: map the extent the log records and look
        off, _ln = extent_of("shared/data.bin")
        fd = os.open(f"/dev/{DEV}", os.O_RDONLY)
        try:
            with mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ, offset=off) as mm:
                assert mm[8192 : 8192 + len(msg)] == msg
        finally:
            os.close(fd)
    with open(MNT / "shared/data.bin", "rb") as f:
        f.seek(8192)
        assert f.read(len(msg)) == msg
    # a file created after mounting appears without a remount
    later = Path("/tmp/later.txt")
    later.write_bytes(b"created after the mount\n" * 100)
    assert not (MNT / "shared/later.txt").exists()
    ok("famfs", "cp", DEV, str(later), "shared/later.txt")
    assert (MNT / "shared/later.txt").read_bytes() == later.read_bytes()
    assert "later.txt" in os.listdir(MNT / "shared")
    stats = json.loads(os.getxattr(MNT, "user.daxmode.stats"))
    reqs = stats["server"]["requests"]
    if path == "dax":  # file data never passed through the server; one GET_FMAP per file
        assert "READ" not in reqs and "WRITE" not in reqs, reqs
        assert reqs["GET_FMAP"] == stats["fmaps_sent"] == stats["fmap_requests"], stats
        assert stats["fmaps_sent"] >= 4  # data.bin, later.txt, .meta/.superblock, .meta/.log
    else:
        assert reqs["READ"] > 0 and reqs["WRITE"] > 0 and "GET_FMAP" not in reqs, reqs
    # famfs semantics: unlink and truncate are refused, nothing changes
    with pytest.raises(PermissionError):
        os.unlink(MNT / "shared/data.bin")
    with pytest.raises(PermissionError):
        os.truncate(MNT / "shared/data.bin", 0)
    assert os.stat(MNT / "shared/data.bin").st_size == DATA_SIZE
    # the kernel enforces the log's modes for other users
    r = as_nobody(f"sha256sum {MNT}/shared/data.bin")
    assert r.returncode == 0, r.stderr
    r = as_nobody(f"ls {MNT}/priv")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # the mode manager sees the mount as using the device
    before = driver()
    for mode in ("system-ram", "fsdev" if before == "device_dax" else "devdax"):
        rc, _out, err = dx("set", DEV, mode, "--no-online") if mode == "system-ram" else dx("set", DEV, mode)
        assert rc == 7 and "mounted on" in err and str(MNT) in err, (mode, rc, err)
    assert driver() == before
    # kill -9 of the server: umount still detaches and restores the mode, and says so
    pid = record()["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait(lambda: not Path(f"/proc/{pid}").exists())
    with pytest.raises(OSError) as e:
        os.listdir(MNT)
    assert e.value.errno == errno.ENOTCONN
    rc, out, err = dx("famfs", "umount", str(MNT))
    assert rc == 0 and "was not running" in out and f"unmounted {MNT}" in out, (out, err)
    assert mountinfo() is None and driver() == "device_dax"


def test_bad_mountpoints_sigterm_and_fsdev_start(famfs_on_device: bytes, fsdev_kernel: str) -> None:
    full = Path("/tmp/full")
    full.mkdir(exist_ok=True)
    (full / "x").write_text("x")
    for mp, why in (
        ("/tmp/does-not-exist", "does not exist"),
        ("/etc/hostname", "not a directory"),
        (str(full), "not empty"),
        ("/run/mhd/share", "already a mount point"),
    ):
        rc, _out, err = dx("famfs", "mount", DEV, mp)
        assert rc == 11 and why in err and err.startswith("daxmode: ") and err.count("\n") == 1, (mp, err)
    rc, _out, err = dx("famfs", "mount", "dax9.9", str(MNT))
    assert rc == 3 and err.count("\n") == 1
    assert driver() == "device_dax" and mountinfo() is None
    # from fsdev: the copy path switches to devdax for the mount and back afterwards (a famfs kernel
    # keeps fsdev and maps by DAX); SIGTERM to the server unmounts cleanly and restores the mode
    ok("set", DEV, "fsdev")
    out = ok("famfs", "mount", DEV, str(MNT))
    path = json.loads(os.getxattr(MNT, "user.daxmode.stats"))["data_path"]
    assert driver() == ("fsdev_dax" if path == "dax" else "device_dax"), out
    assert (MNT / "shared/data.bin").stat().st_size == DATA_SIZE
    pid = record()["pid"]
    os.kill(pid, signal.SIGTERM)
    assert wait(lambda: not Path(f"/proc/{pid}").exists())
    assert mountinfo() is None and driver() == "fsdev_dax"
    assert not Path("/run/daxmode/mounts").exists() or not list(Path("/run/daxmode/mounts").glob("*.json"))
    ok("set", DEV, "devdax")


def _fuse_famfs_kernel() -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.rstrip().split(" ")[2:3] == ["famfs_fuse_iomap_begin"] for line in f)


def _statx_size_forced(path: Path) -> int:
    """st_size from statx(AT_STATX_FORCE_SYNC): FUSE then asks the server (GETATTR) even though
    the attributes it holds are still valid."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statx
    at_fdcwd, at_statx_force_sync, statx_size = -100, 0x2000, 0x200  # uapi/linux/stat.h, fcntl.h
    if libc.statx(at_fdcwd, os.fsencode(path), at_statx_force_sync, statx_size, buf) != 0:
        raise OSError(ctypes.get_errno(), "statx", str(path))
    return int.from_bytes(buf.raw[40:48], "little")  # stx_size


def test_famfs_kernel_fails_io_on_a_size_change(famfs_on_device: bytes) -> None:
    """The famfs kernel's own rule (V10 famfs_file_bad): an inode whose size differs from its
    fmap's is marked bad; its I/O fails with ENXIO, then EIO.  The server is made to report a size
    2 MiB larger than the log's for one file (DAXMODE_FUSE_SIZE_FAULT, test-only).  At open the
    kernel installs the fmap and sets i_size from it (famfs_file_init_dax), so the wrong size
    reaches the inode only through a later GETATTR: forced here with statx."""
    if not _fuse_famfs_kernel():
        pytest.skip("fuse-famfs: the size rule is the famfs kernel's (a stock kernel has no fmaps)")
    dmesg0 = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.count("i_size overwritten")
    env = dict(os.environ, DAXMODE_FUSE_SIZE_FAULT=f"shared/data.bin:{2 << 20}")
    r = subprocess.run(
        [sys.executable, "-m", "daxmode", "famfs", "mount", DEV, str(MNT), "--data-path", "dax"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        assert driver() == "fsdev_dax"  # the kernel holds the device in fsdev while mounted
        assert os.stat(MNT / "shared/data.bin").st_size == DATA_SIZE + (2 << 20)
        with open(MNT / "shared/data.bin", "rb") as f:
            assert os.fstat(f.fileno()).st_size == DATA_SIZE  # the fmap's size won at open
            assert _statx_size_forced(MNT / "shared/data.bin") == DATA_SIZE + (2 << 20)
            with pytest.raises(OSError) as e:
                f.read(4096)
            assert e.value.errno == errno.ENXIO, e.value
            with pytest.raises(OSError) as e:
                f.read(4096)
            assert e.value.errno == errno.EIO, e.value  # the file stays bad
        assert len((MNT / "priv/secret").read_bytes()) == 8192  # other files are fine
        log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        assert log.count("i_size overwritten") > dmesg0, "the kernel did not log the size change"
        rc, _out, err = dx("set", DEV, "devdax")
        assert rc == 7 and "mounted on" in err, err  # the mode manager keeps it while mounted
    finally:
        rc, out, err = dx("famfs", "umount", str(MNT))
    assert rc == 0, (out, err)
    assert mountinfo() is None and driver() == "device_dax"  # umount released it and restored devdax
    ok("set", DEV, "fsdev")  # and the mode manager can switch it again
    ok("set", DEV, "devdax")
