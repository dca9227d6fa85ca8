"""In-guest, famfs-v1 kernel: ``daxmode famfs mount`` on the standalone famfs module, read back for real.

The module (``make famfs-v1-kernel``) serves the files itself once daxmode has created them and
handed each its extents with FAMFSIOC_MAP_CREATE; daxmode runs no server.  Everything is read from
the kernel: mountinfo, the driver link in sysfs, stat of the mounted files, their bytes through
read() and mmap, the device's bytes through a raw devdax mapping, and the maps the module holds
(``famfs check``: MAP_GET/MAP_GETEXT).  On any other kernel the whole module skips (declared in
qemu/skips/debian.toml and famfs-v10.toml with ``famfsv1 = false``).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from .sysview import driver
from .test_famfs_mount import as_nobody, dx, ok
from .test_famfs_mount import mountinfo as mountinfo_at

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BUS = Path("/sys/bus/dax")
MNT = Path("/mnt/daxmode-famfs-v1")
DATA_SIZE = 3 * 1024 * 1024 + 4097
IL_SIZE = 3 * 1024 * 1024 + 77
SEED = 20261207
MiB = 1 << 20

pytestmark = [
    pytest.mark.guest,
    pytest.mark.shared_media,
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]


def mountinfo() -> list[str] | None:
    return mountinfo_at(MNT)


def device_bytes(off: int, n: int) -> bytes:
    fd = os.open(f"/dev/{DEV}", os.O_RDONLY)
    try:
        base = off - off % (2 * MiB)
        with mmap.mmap(fd, off - base + n, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as m:
            return m[off - base : off - base + n]
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> dict:
    status = json.loads(ok("famfs", "status", "--json"))
    if status["kernel"]["data_path"] != "famfs-v1":
        pytest.skip(f"famfs-v1: kernel {os.uname().release} has no standalone famfs module")
    assert driver() == "device_dax", "the harness hands over the device in devdax"
    from daxmode.famfs.media.access import open_famfs

    data = random.Random(SEED).randbytes(DATA_SIZE)
    il = random.Random(SEED + 1).randbytes(IL_SIZE)
    src = tmp_path_factory.mktemp("src") / "data.bin"
    src.write_bytes(data)
    ok("famfs", "mkfs", DEV, "--force")
    ok("famfs", "mkdir", DEV, "shared")
    ok("famfs", "mkdir", DEV, "priv", "-m", "0700", "-u", "1000", "-g", "1000")
    ok("famfs", "cp", DEV, str(src), "shared/data.bin", "-m", "0644")
    ok("famfs", "creat", DEV, "priv/secret", "-s", "8192", "-m", "0600", "-u", "1000", "-g", "1000")
    with open_famfs(DEV, writable=True) as fs:  # interleaved within two chunks: two v1 extents
        v = fs.volume
        meta, _ = v.creat("shared/il.bin", IL_SIZE, nstrips=2, chunk=2 * MiB, nbuckets=2, min_bucket=2 * MiB)
        assert meta.interleaved
        assert v.write(meta, il) == IL_SIZE
    MNT.mkdir(parents=True, exist_ok=True)
    yield {"data": data, "il": il}
    if mountinfo() is not None:
        dx("famfs", "umount", str(MNT))
    if mountinfo() is not None:
        subprocess.run(["umount", "-l", str(MNT)], check=False)


def test_mount_maps_every_file_and_serves_it(volume: dict) -> None:
    rc, out, err = dx("famfs", "mount", DEV, str(MNT))
    assert rc == 0, (out, err)
    mi = mountinfo()
    assert mi is not None and mi[0] == "famfs" and mi[1] == f"/dev/{DEV}", mi
    assert driver() == "device_dax"  # the module takes the devdax device (fs_dax_get)
    assert "famfs" in Path("/proc/filesystems").read_text().split()
    st = json.loads(ok("famfs", "status", "--json"))
    assert [m["data_path"] for m in st["mounts"]] == ["famfs-v1"] and st["mounts"][0]["mounted"]
    # the meta files: mapped onto the superblock and the log
    sbf, logf = MNT / ".meta/.superblock", MNT / ".meta/.log"
    assert sbf.stat().st_size == 2 * MiB and stat.S_IMODE(sbf.stat().st_mode) == 0o444
    assert sbf.read_bytes()[:4096] == device_bytes(0, 4096)
    assert logf.read_bytes()[:4096] == device_bytes(2 * MiB, 4096)
    # files: bytes, modes and owners from the log, enforced by the kernel
    data = volume["data"]
    got = subprocess.run(f"cat {MNT}/shared/data.bin | sha256sum", shell=True, capture_output=True, text=True)
    assert got.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    with open(MNT / "shared/il.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == volume["il"]  # interleaved, unrolled into two extents
    s = os.stat(MNT / "priv/secret")
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_size) == (0o600, 1000, 1000, 8192)
    d = os.stat(MNT / "priv")
    assert stat.S_ISDIR(d.st_mode) and (stat.S_IMODE(d.st_mode), d.st_uid) == (0o700, 1000)
    assert as_nobody(f"sha256sum {MNT}/shared/data.bin").returncode == 0
    r = as_nobody(f"ls {MNT}/priv")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # a write through a shared mapping of the file lands on the device at the file's extent
    from daxmode.famfs.media.access import open_famfs

    with open_famfs(DEV) as fs:
        off = fs.volume.lookup_file("shared/data.bin").extents[0][1]
    msg = f"written through the famfs-v1 mount on {os.uname().nodename}".encode()
    fd = os.open(MNT / "shared/data.bin", os.O_RDWR)
    try:
        with mmap.mmap(fd, DATA_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[8192 : 8192 + len(msg)] = msg
    finally:
        os.close(fd)
    assert device_bytes(off + 8192, len(msg)) == msg
    # the module's maps read back equal the log's
    res = json.loads(ok("famfs", "check", str(MNT), "--json"))
    assert res["ok"] and {f["path"] for f in res["files"]} >= {".meta/.log", "shared/il.bin", "priv/secret"}
    il = next(f for f in res["files"] if f["path"] == "shared/il.bin")
    assert 1 <= len(il["kernel_map"]["extents"]) <= 2  # two strips' chunks (one if they are adjacent)
    # the mode manager keeps the device while mounted
    rc, _out, err = dx("set", DEV, "system-ram", "--no-online")
    assert rc == 7 and "mounted on" in err, err
    assert driver() == "device_dax"


def test_logplay_brings_new_entries_and_refuses_what_v1_cannot_map(volume: dict) -> None:
    assert mountinfo() is not None, "needs the mount of the previous test"
    later = Path("/tmp/v1-later.txt")
    later.write_bytes(b"created after the famfs-v1 mount\n" * 1000)
    ok("famfs", "cp", DEV, str(later), "shared/later.txt")
    ok("famfs", "mkdir", DEV, "shared/sub", "-m", "0750", "-u", "7", "-g", "8")
    from daxmode.famfs.media import layout as L
    from daxmode.famfs.media.access import open_famfs

    with open_famfs(DEV, writable=True) as fs:  # four chunks over two strips: four v1 extents
        v = fs.volume
        v.creat("shared/wide.bin", 7 * MiB, nstrips=2, chunk=2 * MiB, nbuckets=2, min_bucket=2 * MiB)
        # issue 16's crafted file: 4 MiB chunks over 2 MiB strips, the first strip just before
        # priv/secret's extent, so chunk 0 would run into the secret
        sec = v.lookup_file("priv/secret").extents[0][1]
        strips = [(0, sec - 2 * MiB, 2 * MiB), (0, sec + 2 * MiB, 2 * MiB)]
        v._append(
            lambda seq: L.pack_interleaved_entry(seq, "shared/evil", 4 * MiB, 4 * MiB, strips, mode=0o644)
        )
    assert not (MNT / "shared/later.txt").exists()
    rep = json.loads(ok("famfs", "logplay", str(MNT), "--json"))
    assert rep["created_files"] == ["shared/later.txt"] and rep["created_directories"] == ["shared/sub"], rep
    assert len(rep["refused"]) == 2, rep  # wide.bin by the v1 ABI, evil by the extent validator
    assert any("shared/wide.bin" in r and "4 extents" in r for r in rep["refused"]), rep
    assert any("'shared/evil'" in r for r in rep["refused"]), rep
    assert not (MNT / "shared/evil").exists()  # no MAP_CREATE was made for it
    assert (MNT / "shared/later.txt").read_bytes() == later.read_bytes()
    s = os.stat(MNT / "shared/sub")
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) == (0o750, 7, 8)
    assert not (MNT / "shared/wide.bin").exists()
    again = json.loads(ok("famfs", "logplay", str(MNT), "--json"))  # idempotent
    assert again["created_files"] == [] and again["created_directories"] == [] and len(again["refused"]) == 2
    assert json.loads(ok("famfs", "check", str(MNT), "--json"))["ok"]


def test_umount_restores_and_a_new_mount_sees_everything(volume: dict) -> None:
    out = ok("famfs", "umount", str(MNT))
    assert f"unmounted {MNT}" in out
    assert mountinfo() is None and driver() == "device_dax"
    assert not list(Path("/run/daxmode/mounts").glob("*.json"))
    out = ok("famfs", "mount", DEV, str(MNT))
    assert (MNT / "shared/later.txt").is_file() and (MNT / "shared/sub").is_dir()
    msg = f"written through the famfs-v1 mount on {os.uname().nodename}".encode()
    with open(MNT / "shared/data.bin", "rb") as f:
        f.seek(8192)
        assert f.read(len(msg)) == msg  # the write of the first test is on the media
    ok("famfs", "umount", str(MNT))
    assert mountinfo() is None and driver() == "device_dax"
