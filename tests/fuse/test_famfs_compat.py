"""famfs's own tools' contract on a real daxmode mount (root + /dev/fuse): the shadow tree, the REST
socket, famfs's create order (YAML, open through the mount, mapped log append, unlock), the flock on
.meta/.log as the volume lock, and the map ioctls.

famfs's C tools are not needed here: each test does in Python what famfs's CLI does, step for step
(``__famfs_mkfile``/``__famfs_init_locked_log`` at famfs 5d0919f), and reads the result back from
the image, the shadow directory and the mount.  The C tools themselves run in
``scripts/famfs-cli-check.sh`` and ``make famfs-smoke``.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_mount_host import DAXMODE, World
from test_mount_host import w as _world  # noqa: F401  (the fixture, registered as `_world`)

from daxmode.famfs.media import layout as L
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.mount import ioctls
from daxmode.famfs.mount import records as S
from daxmode.famfs.mount import shadowyaml as Y
from daxmode.fsdev import map_image

MiB = 1 << 20
FREE = 200 * MiB
"""A device offset no file uses in these 256 MiB images (files here are allocated from 10 MiB up)."""


@pytest.fixture
def w(_world: World) -> World:  # noqa: F811
    """test_mount_host's world: a daxmode root, a mount point and a 256 MiB image."""
    return _world


def shadow_of(p: Path) -> Path:
    return Path(os.getxattr(p, "user.famfs.shadow").decode())


def server_log(w: World) -> str:
    return S.log_path(w.sysfs, str(w.mnt)).read_text()


def mounted(w: World) -> Path:
    w.famfs("mkfs", str(w.img))
    w.famfs("mkdir", str(w.img), "d")
    w.famfs("creat", str(w.img), "d/f", "-s", "5000", "-m", "0640", "-u", "7", "-g", "8")
    w.famfs("mount", str(w.img), str(w.mnt))
    sh = shadow_of(w.mnt)
    deadline = time.monotonic() + 20  # file documents are written just after the mount is up
    while not (sh / "root" / "d" / "f").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return sh


def http(sock: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


class FamfsWriter:
    """famfs's locked-log session, as its CLI runs it on a FUSE mount: flock .meta/.log, map it
    shared, write shadow YAML, open the new file through the mount, append entries through the
    mapping (no msync), unlock."""

    def __init__(self, mnt: Path) -> None:
        self.mnt = mnt
        self.shadow = shadow_of(mnt) / "root"
        self.fd = os.open(mnt / ".meta" / ".log", os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.map = mmap.mmap(self.fd, os.fstat(self.fd).st_size, mmap.MAP_SHARED)

    def yaml(self, rel: str, off: int, size: int, mode: int = 0o644) -> None:
        meta = L.FileMeta(-1, rel, size, 2, 0, 0, mode, L.EXT_SIMPLE, ((0, off, L.round_up(size, 2 * MiB)),))
        (self.shadow / rel).write_bytes(Y.emit(meta))

    def append(self, rel: str, off: int, size: int, mode: int = 0o644) -> None:
        hdr = L.unpack_log_header(self.map[: L.LOG_HDR_SIZE])
        i = hdr.next_index
        e = L.pack_file_entry(i, rel, size, [(0, off, L.round_up(size, 2 * MiB))], mode=mode)
        self.map[L.LOG_HDR_SIZE + i * L.ENTRY_SIZE : L.LOG_HDR_SIZE + (i + 1) * L.ENTRY_SIZE] = e
        self.map[L.LOG_HDR_COUNTERS_OFF : L.LOG_HDR_COUNTERS_OFF + 16] = struct.pack("<2Q", i + 1, i + 1)

    def release(self) -> None:
        self.map.close()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def on_image(w: World, off: int, n: int) -> bytes:
    with map_image(w.img, writable=False) as m:
        return bytes(m.buf[off : off + n])


def test_shadow_tree_mirrors_the_log_and_rest_answers(w: World) -> None:
    sh = mounted(w)
    assert shadow_of(w.mnt / "d" / "f") == sh  # famfs asks on any path inside the mount
    st = os.stat(sh)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == 0
    assert (sh / "root" / "d").is_dir()
    claim = Y.parse((sh / "root" / "d" / "f").read_bytes())
    with map_image(w.img, writable=False) as m:
        rep = fsck(m.buf, m.size)
        log = L.unpack_log_header(m.buf[L.LOG_OFFSET : L.LOG_OFFSET + L.LOG_HDR_SIZE])
        entries = [
            L.decode_entry(m.buf, L.LOG_OFFSET + L.LOG_HDR_SIZE + i * L.ENTRY_SIZE, i)
            for i in range(log.next_index)
        ]
    assert not rep.problems
    f = next(e for e in entries if isinstance(e, L.FileMeta))
    assert (claim.size, claim.mode, claim.uid, claim.gid, claim.extents) == (
        f.size,
        f.mode,
        f.uid,
        f.gid,
        f.extents,
    )
    sbm = Y.parse((sh / "root" / ".meta" / ".superblock").read_bytes())
    lgm = Y.parse((sh / "root" / ".meta" / ".log").read_bytes())
    assert sbm.extents == ((0, 0, 2 * MiB),) and sbm.mode == 0o444
    assert lgm.extents == ((0, 2 * MiB, rep.superblock.log_len),)  # type: ignore[union-attr]
    out = http(sh / "sock", b"GET /icache_stats HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"search_count:" in out and b"search_fail_ct:" in out
    assert http(sh / "sock", b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert b"set to 7" in http(sh / "sock", b"POST /log_level HTTP/1.1\r\nContent-Length: 1\r\n\r\n7")
    assert http(sh / "sock", b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    w.famfs("umount", str(w.mnt))
    assert not sh.exists()  # the server removes what it made


def test_famfs_create_order_yaml_open_write_then_log(w: World) -> None:
    mounted(w)
    data = os.urandom(3 * MiB + 11)
    fw = FamfsWriter(w.mnt)
    fw.yaml("new.bin", FREE, len(data))
    fd = os.open(w.mnt / "new.bin", os.O_RDWR)  # before any log entry: served from the YAML
    with mmap.mmap(fd, len(data), mmap.MAP_SHARED) as mm:
        mm[:] = data  # famfs cp copies through a shared mapping and never msyncs
    os.close(fd)
    fw.append("new.bin", FREE, len(data))
    fw.release()  # the server writes back, plays the entry, settles the provisional name
    assert on_image(w, FREE, len(data)) == data
    assert (w.mnt / "new.bin").read_bytes() == data
    with map_image(w.img, writable=False) as m:
        assert not fsck(m.buf, m.size).problems
    assert "dropped" not in server_log(w)
    assert os.stat(w.mnt / "new.bin").st_ino == os.stat(w.mnt / "new.bin").st_ino < 1 << 56  # the log's node


def test_yaml_without_a_log_entry_is_dropped_at_unlock(w: World) -> None:
    sh = mounted(w)
    fw = FamfsWriter(w.mnt)
    fw.yaml("orphan", FREE, 4096)
    os.mkdir(sh / "root" / "odir")
    assert os.stat(w.mnt / "orphan").st_size == 4096
    assert (w.mnt / "odir").is_dir()
    fw.release()
    with pytest.raises(FileNotFoundError):
        os.stat(w.mnt / "orphan")
    assert not (sh / "root" / "orphan").exists() and not (sh / "root" / "odir").exists()
    log = server_log(w)
    assert "dropped 'orphan'" in log and "dropped 'odir'" in log


def test_log_entry_that_differs_from_its_yaml_wins(w: World) -> None:
    mounted(w)
    fw = FamfsWriter(w.mnt)
    fw.yaml("m", FREE, 2 * MiB)
    fd = os.open(w.mnt / "m", os.O_RDONLY)
    os.close(fd)
    fw.append("m", FREE + 4 * MiB, 2 * MiB)
    fw.release()
    assert "the shadow file claimed" in server_log(w)
    sh = shadow_of(w.mnt)
    assert Y.parse((sh / "root" / "m").read_bytes()).extents == ((0, FREE + 4 * MiB, 2 * MiB),)
    buf = bytearray(ioctls.GET_FMAP_SIZE)
    with open(w.mnt / "m", "rb") as f:
        fcntl.ioctl(f.fileno(), ioctls.FAMFSIOC_MAP_GET_V2, buf)
    assert struct.unpack_from("<3Q", buf, ioctls.FMAP_HEAD.size) == (0, FREE + 4 * MiB, 2 * MiB)


@pytest.mark.parametrize(
    "off,why",
    [
        (2 * MiB, "superblock and log"),
        (0, "superblock and log"),
        (FREE + 1, "not aligned"),
        (None, "overlaps"),
    ],
)
def test_yaml_claims_that_would_expose_other_bytes_are_refused(w: World, off: int | None, why: str) -> None:
    mounted(w)
    if off is None:  # d/f's own extent
        off = Y.parse((shadow_of(w.mnt) / "root" / "d" / "f").read_bytes()).extents[0][1]
    fw = FamfsWriter(w.mnt)
    fw.yaml("evil", off, 4096)
    try:
        with pytest.raises(FileNotFoundError):
            os.stat(w.mnt / "evil")
    finally:
        fw.release()
    assert "'evil' is not served" in server_log(w) and why in server_log(w)


def test_famfs_writer_holding_the_log_flock_excludes_daxmode_writers(w: World) -> None:
    """Issue 16: a famfs-style writer holds flock on MNT/.meta/.log while daxmode writers append:
    every file kept, fsck clean."""
    mounted(w)
    fw = FamfsWriter(w.mnt)
    procs = [
        subprocess.Popen([*w_cmd(w), "famfs", "creat", str(w.img), f"dx{i}", "-s", "3000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]  # fmt: skip
    time.sleep(1.5)
    assert all(p.poll() is None for p in procs), "a daxmode writer ran while famfs held the lock"
    for k in range(3):  # famfs appends meanwhile, where its bitmap says space is free
        fw.yaml(f"ff{k}", FREE + k * 2 * MiB, 1000)
        fw.append(f"ff{k}", FREE + k * 2 * MiB, 1000)
    fw.release()
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    names = set(os.listdir(w.mnt))
    assert {f"dx{i}" for i in range(4)} | {f"ff{k}" for k in range(3)} <= names
    with map_image(w.img, writable=False) as m:
        rep = fsck(m.buf, m.size)
    assert not rep.problems, rep.problems


def test_log_flock_is_the_volume_lock(w: World) -> None:
    """A flock on .meta/.log of a daxmode mount holds the volume lock (the image inode's flock)."""
    mounted(w)
    fd = os.open(w.mnt / ".meta" / ".log", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    img = os.open(w.img, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(img, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(img, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
        fcntl.flock(img, fcntl.LOCK_UN)
    finally:
        os.close(img)
        os.close(fd)
    # other files keep flock semantics among clients
    a = os.open(w.mnt / "d" / "f", os.O_RDONLY)
    b = os.open(w.mnt / "d" / "f", os.O_RDONLY)
    fcntl.flock(a, fcntl.LOCK_SH)
    fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    with pytest.raises(BlockingIOError):
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    got = threading.Event()

    def wait_ex() -> None:
        fcntl.flock(b, fcntl.LOCK_EX)
        got.set()

    t = threading.Thread(target=wait_ex)
    t.start()
    time.sleep(0.3)
    assert not got.is_set()
    os.close(a)  # the last close releases a's lock (RELEASE with FLOCK_UNLOCK)
    t.join(10)
    assert got.is_set()
    os.close(b)


def test_map_ioctls(w: World) -> None:
    sh = mounted(w)
    ext = Y.parse((sh / "root" / "d" / "f").read_bytes()).extents[0]
    with open(w.mnt / "d" / "f", "rb") as f:
        fcntl.ioctl(f.fileno(), ioctls.FAMFSIOC_NOP)
        v1 = bytearray(ioctls.MAP_V1_SIZE)
        fcntl.ioctl(f.fileno(), ioctls.FAMFSIOC_MAP_GET, v1)
    assert ioctls.MAP_V1.unpack_from(v1) == (0, 0, 5000, 1)
    assert struct.unpack_from("<2Q", v1, ioctls.MAP_V1.size) == ext[1:]
    with open(w.mnt / ".meta" / ".log", "rb") as f:
        v2 = bytearray(ioctls.GET_FMAP_SIZE)
        fcntl.ioctl(f.fileno(), ioctls.FAMFSIOC_MAP_GET_V2, v2)
    size, ftype, etype, n, _ptr = ioctls.FMAP_HEAD.unpack_from(v2)
    assert (ftype, etype, n) == (ioctls.FILE_LOG, L.EXT_SIMPLE, 1) and size == 8 * MiB
    with open(w.mnt / "d" / "f", "rb") as f, pytest.raises(OSError):
        fcntl.ioctl(f.fileno(), 0x5401)  # TCGETS: not famfs's


def w_cmd(w: World) -> list[str]:
    return [DAXMODE, "--root", str(w.root)]
