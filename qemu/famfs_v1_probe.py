"""Does the standalone famfs module answer its ioctls?  (kernel-test.sh FAMFS=v1, check famfs-v1-ioctl)

Run in a guest on the famfs-v1 kernel with the shared dax device in devdax mode.  It mounts the
device with ``mount -t famfs`` on a temporary directory, creates one file and checks, through
daxmode's codec of the v1 ABI (daxmode/famfs/mount/v1abi.py, so a wrong ioctl number or struct
layout fails here):

- ``FAMFSIOC_NOP`` answers 0;
- ``FAMFSIOC_MAP_CREATE`` of one 2 MiB extent at device offset 2 MiB with size 4096 succeeds, and
  a second map for the same file is refused with EEXIST;
- ``FAMFSIOC_MAP_GET`` gives size 4096 and one extent, ``MAP_GETEXT`` gives that extent back;
- the module refuses an unaligned extent (EINVAL) and three extents (E2BIG) on other files;
- ``read()`` of the mapped file returns the same 4096 bytes as the device at 2 MiB (read through a
  read-only mapping of /dev/daxX.Y: nothing is written anywhere);

then unmounts.  Output: one line per check; exit 0 all passed, 1 a check failed, 2 usage.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daxmode.famfs.mount import v1abi as A

_libc = ctypes.CDLL(None, use_errno=True)
OFF = 0x200000


def _fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def _expect_errno(fd: int, req: int, arg: bytes, want: int, what: str) -> None:
    try:
        fcntl.ioctl(fd, req, arg)
    except OSError as e:
        if e.errno != want:
            _fail(f"{what}: errno {errno.errorcode.get(e.errno, e.errno)}, expected {errno.errorcode[want]}")
        print(f"{what} refused with {errno.errorcode[want]}")
        return
    _fail(f"{what} was accepted")


def probe(dev: str, mp: str) -> None:
    if _libc.mount(dev.encode(), mp.encode(), b"famfs", 0, None) != 0:
        e = ctypes.get_errno()
        _fail(f"mount -t famfs {dev} {mp}: {os.strerror(e)}")
    try:
        print(f"mounted {dev} at {mp} (famfs)")
        path = os.path.join(mp, "probe")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if fcntl.ioctl(fd, A.NOP) != 0:
                _fail("FAMFSIOC_NOP did not answer 0")
            print(f"FAMFSIOC_NOP ({A.NOP:#x}) answered 0")
            m = A.V1Map(A.FILE_REG, 4096, ((OFF, 0x200000),))
            fcntl.ioctl(fd, A.MAP_CREATE, A.pack_map(m))
            print(f"FAMFSIOC_MAP_CREATE ({A.MAP_CREATE:#x}) mapped {path} onto {OFF:#x}+0x200000, size 4096")
            _expect_errno(fd, A.MAP_CREATE, A.pack_map(m), errno.EEXIST, "a second MAP_CREATE")
            buf = bytearray(A.MAP.size)
            fcntl.ioctl(fd, A.MAP_GET, buf, True)
            _t, size, count = A.unpack_map_header(buf)
            if (size, count) != (4096, 1):
                _fail(f"FAMFSIOC_MAP_GET: size {size}, {count} extents; expected 4096, 1")
            ext = A.getext_buffer(count)
            fcntl.ioctl(fd, A.MAP_GETEXT, ext, True)
            got = A.unpack_extents(ext, count)
            if got != m.extents:
                _fail(f"FAMFSIOC_MAP_GETEXT: {got}; expected {m.extents}")
            nums = f"FAMFSIOC_MAP_GET ({A.MAP_GET:#x}) / MAP_GETEXT ({A.MAP_GETEXT:#x})"
            print(f"{nums}: size 4096, extents {got}")
            data = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        dfd = os.open(dev, os.O_RDONLY)
        try:
            with mmap.mmap(dfd, 2 * OFF, mmap.MAP_SHARED, mmap.PROT_READ) as dm:
                raw = dm[OFF : OFF + 4096]
        finally:
            os.close(dfd)
        if data != raw:
            _fail("read() of the mapped file differs from the device's bytes at 2 MiB")
        print(f"read() of the file = the device's 4096 bytes at {OFF:#x} (through a read-only map of {dev})")
        for name, bad, want in (
            ("unaligned", A.V1Map(A.FILE_REG, 4096, ((OFF + 4096, 0x200000),)), errno.EINVAL),
            ("three-extents", None, errno.E2BIG),
        ):
            p = os.path.join(mp, name)
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if bad is None:
                    raw3 = A.MAP.pack(A.SIMPLE_DAX_EXTENT, A.FILE_REG, 4096, 3, OFF, OFF, 2 * OFF, OFF)
                    _expect_errno(fd, A.MAP_CREATE, raw3, want, "MAP_CREATE with 3 extents")
                else:
                    what = "MAP_CREATE at an unaligned offset"
                    _expect_errno(fd, A.MAP_CREATE, A.pack_map(bad), want, what)
            finally:
                os.close(fd)
    finally:
        if _libc.umount2(mp.encode(), 0) != 0:
            _fail(f"umount {mp}: {os.strerror(ctypes.get_errno())}")
    print(f"unmounted {mp}")


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith("/dev/dax"):
        print("usage: famfs_v1_probe.py /dev/daxX.Y", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory(prefix="famfs-v1-probe.") as mp:
        probe(sys.argv[1], mp)


if __name__ == "__main__":
    main()
