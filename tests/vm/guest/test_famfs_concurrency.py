"""In-guest, real kernel: concurrent famfs writers on the real dax device, read back from the log.

8 writer processes (forked from this one, so each opens ``/dev/daxX.Y`` and takes the volume lock
through its own open file, as separate ``daxmode famfs creat`` runs would, without paying python
start-up under TCG) create files and directories at once on the device in devdax mode; then 4 on
the device in fsdev mode, where each writer switches it to devdax and back under the mode lock.
The result is read from the device by a parser written here from the famfs format facts (header
counters, seqnum == index, entry CRCs, paths, extents), not through daxmode, and compared with
what the writers reported; daxmode's fsck must agree that the log is clean.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .sysview import driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BUS = Path("/sys/bus/dax")
MiB = 1 << 20

pytestmark = [
    pytest.mark.guest,
    pytest.mark.shared_media,  # mkfs and writes on the device other hosts share: one host at a time
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]

# famfs on-media facts (famfs 5d0919f src/famfs_meta.h: struct famfs_log :243-251, struct famfs_log_entry
# :218-227): log at 2 MiB, 48-byte header, 544-byte entries
LOG_OFF, HDR, ENTRY, CRC_OFF = 0x200000, 48, 544, 536
FILE, MKDIR = 0, 1


def read_log() -> tuple[dict[str, tuple[int, list[tuple[int, int]]]], set[str], int]:
    """Play the log straight from /dev/DEV (devdax): files (path -> size, extents), dirs, entries."""
    size = int((BUS / "devices" / DEV / "size").read_text())
    align = int((BUS / "devices" / DEV / "align").read_text())
    fd = os.open(f"/dev/{DEV}", os.O_RDONLY)
    try:
        m = mmap.mmap(fd, size - size % align, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        log_len = struct.unpack_from("<Q", m, 24)[0]
        magic, hlen, last, _crc, seq, n = struct.unpack_from("<6Q", m, LOG_OFF)
        assert (magic, hlen) == (0xBADCAFEF00D, log_len) and seq == n and n <= last + 1
        files: dict[str, tuple[int, list[tuple[int, int]]]] = {}
        dirs: set[str] = set()
        for i in range(n):
            e = bytes(m[LOG_OFF + HDR + i * ENTRY : LOG_OFF + HDR + (i + 1) * ENTRY])
            assert struct.unpack_from("<Q", e, CRC_OFF)[0] == zlib.crc32(e[:CRC_OFF]), f"entry {i}: CRC"
            seqnum, etype = struct.unpack_from("<QI", e, 0)
            assert seqnum == i, f"entry {i}: seqnum {seqnum}"
            if etype == FILE:
                fsize = struct.unpack_from("<Q", e, 16)[0]
                path = e[40:120].split(b"\0")[0].decode()
                ext_type, count = struct.unpack_from("<I4xI", e, 120)
                assert ext_type == 0  # simple extents
                ext = [struct.unpack_from("<8xQQ", e, 136 + 24 * k) for k in range(count)]
                assert path not in files and path not in dirs, f"entry {i}: {path} logged twice"
                files[path] = (fsize, ext)
            else:
                assert etype == MKDIR, f"entry {i}: type {etype}"
                path = e[28:108].split(b"\0")[0].decode()
                assert path not in files and path not in dirs, f"entry {i}: {path} logged twice"
                dirs.add(path)
        return files, dirs, n
    finally:
        m.close()


def fork(fn: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def run_writers(nproc: int, nfiles: int, tag: str, barrier: bool) -> list[str]:
    """``nproc`` processes open the device, (optionally) wait until all have played the log, and
    each logs ``nfiles`` files and one directory; returns their "kind path size" reports."""
    from daxmode.famfs import Volume
    from daxmode.famfs.media.identity import read_system_uuid
    from daxmode.famfs.medium import open_medium
    from daxmode.sysfs import Sysfs

    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    outs, pids = [], []
    for w in range(nproc):
        r, wfd = os.pipe()

        def writer(w: int = w, wfd: int = wfd) -> None:
            sysfs = Sysfs("/")
            os.close(go_w)
            os.close(ready_r)
            with open_medium(sysfs, DEV) as m:
                v = Volume(m, read_system_uuid(sysfs), lock_timeout=120)
                os.write(ready_w, b".")
                if barrier:
                    os.read(go_r, 1)
                for j in range(nfiles):
                    path, size = f"{tag}w{w}-f{j}", (j % 3) * MiB + 4096 * (w + 1)
                    v.creat(path, size)
                    os.write(wfd, f"file {path} {size}\n".encode())
                v.mkdir(f"{tag}d{w}")
                os.write(wfd, f"dir {tag}d{w} 0\n".encode())
                v.close()

        pids.append(fork(writer))
        os.close(wfd)
        outs.append(r)
    os.close(ready_w)
    os.close(go_r)
    if barrier:
        for _ in range(nproc):
            assert os.read(ready_r, 1) == b"."
        os.write(go_w, b"x" * nproc)
    os.close(go_w)
    status = {}
    for pid in pids:
        status[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os.close(ready_r)
    lines = []
    for fd in outs:
        with os.fdopen(fd) as f:
            lines += f.read().splitlines()
    assert all(rc == 0 for rc in status.values()), f"writers exited {status}"
    return lines


def check(lines: list[str], before: tuple[dict, set]) -> None:
    files, dirs, _n = read_log()
    want_files = dict(before[0])
    want_dirs = set(before[1])
    for ln in lines:
        kind, path, size = ln.split()
        if kind == "file":
            want_files[path] = int(size)
        else:
            want_dirs.add(path)
    assert {p: s for p, (s, _e) in files.items()} == want_files
    assert dirs == want_dirs
    spans = sorted((off, off + ln, p) for p, (_s, ext) in files.items() for off, ln in ext)
    for (_a0, a1, pa), (b0, _b1, pb) in itertools.pairwise(spans):
        assert a1 <= b0, f"{pa} and {pb} overlap"
    assert all(off >= LOG_OFF + (8 << 20) and off % (2 * MiB) == 0 for off, _e, _p in spans)
    from daxmode.famfs import fsck
    from daxmode.famfs.medium import open_medium
    from daxmode.sysfs import Sysfs

    with open_medium(Sysfs("/"), DEV, writable=False) as m:
        rep = fsck(m.buf, m.size)
    assert rep.ok, rep.problems
    assert rep.stats["files"] == len(want_files) and rep.stats["directories"] == len(want_dirs)


@pytest.fixture
def formatted() -> Iterator[None]:
    """A fresh famfs on the device (this host is its master); the superblock is invalidated after."""
    from daxmode.famfs import mkfs
    from daxmode.famfs.media.identity import ensure_system_uuid
    from daxmode.famfs.medium import open_medium
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.sysfs import Sysfs

    sysfs = Sysfs("/")
    assert driver() == "device_dax", f"{DEV} not in devdax at test start: {driver()}"
    with open_medium(sysfs, DEV) as m:
        mkfs(m, ensure_system_uuid(sysfs), force=True)
    yield
    if driver() != "device_dax":
        set_mode(sysfs, DEV, Mode.DEVDAX, Options(force=True))
    with open_medium(sysfs, DEV) as m:
        mkfs(m, ensure_system_uuid(sysfs), force=True, kill=True)
    assert driver() == "device_dax"


def test_eight_concurrent_writers_devdax(formatted: None) -> None:
    """8 processes that all read the empty log before any of them wrote: nothing lost."""
    lines = run_writers(8, 6, "a", barrier=True)
    assert len(lines) == 8 * 7
    check(lines, ({}, set()))
    files, dirs, n = read_log()
    assert n == 8 * 7 and len(files) == 48 and len(dirs) == 8


def test_concurrent_writers_through_fsdev(formatted: None, fsdev_kernel: str) -> None:
    """The device in fsdev mode: each writer switches it to devdax for its session and back, under
    the mode lock; every writer succeeds, and the device ends in fsdev."""
    from daxmode.modes import Mode, Options, set_mode
    from daxmode.sysfs import Sysfs

    first = run_writers(2, 2, "pre", barrier=True)
    set_mode(Sysfs("/"), DEV, Mode.FSDEV, Options())
    lines = run_writers(4, 3, "b", barrier=False)
    assert driver() == "fsdev_dax"
    set_mode(Sysfs("/"), DEV, Mode.DEVDAX, Options())
    before_files = {ln.split()[1]: int(ln.split()[2]) for ln in first if ln.startswith("file")}
    before_dirs = {ln.split()[1] for ln in first if ln.startswith("dir")}
    check(lines, (before_files, before_dirs))
