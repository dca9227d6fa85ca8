"""What a fresh fuse connection's INIT request offers: is FUSE_DAX_FMAP (famfs) among the flags?

The famfs fuse series (V10 02/10, 04/10) makes the kernel offer FUSE_DAX_FMAP, bit 43 of the
64-bit INIT flags (bit 11 of `flags2`, which counts only with FUSE_INIT_EXT in `flags`), when
CONFIG_FUSE_FAMFS_DAX is on and the task that mounts has CAP_SYS_RAWIO. kernel-test.sh runs this
probe in a guest twice, as root and with CAP_SYS_RAWIO dropped from the bounding set (setpriv), and
expects the bit exactly in the first case.

This is not a file-system server: it mounts a fuse connection, reads the one INIT request the
kernel queues at mount time, answers it with ENOSYS (the kernel then fails the connection), and
unmounts. Numbers come from include/uapi/linux/fuse.h (fuse_in_header, fuse_init_in, FUSE_INIT
= 26, FUSE_INIT_EXT = 1 << 30) and the series (FUSE_DAX_FMAP = 1 << 43). Standard library only:
the guest runs it with the system python, no venv.

Output: one line of key=value pairs, e.g.
    init major=7 minor=45 flags=0x... flags2=0x... dax_fmap=1 cap_sys_rawio=1
Exit: 0 probed; 1 the probe itself failed (message on stderr); 2 usage.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
import tempfile

FUSE_INIT = 26
FUSE_INIT_EXT = 1 << 30
FUSE_DAX_FMAP = 1 << 43
CAP_SYS_RAWIO = 17
MS_NOSUID, MS_NODEV = 2, 4
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid total_extlen padding
INIT_IN = struct.Struct("<IIIII")  # major minor max_readahead flags flags2 (then unused[11])
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
READ_SIZE = 1 << 20  # the kernel refuses reads shorter than max(8192, 80 + max_write)

_libc = ctypes.CDLL(None, use_errno=True)


def has_cap(cap: int) -> bool:
    """Is `cap` in this task's effective set (/proc/self/status CapEff)?"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def flags64(flags: int, flags2: int) -> int:
    """The 64-bit INIT flags: flags2 holds bits 32..63 and counts only with FUSE_INIT_EXT."""
    return flags | (flags2 << 32 if flags & FUSE_INIT_EXT else 0)


def parse_init(buf: bytes) -> dict[str, int]:
    """The fields of an INIT request (header + fuse_init_in) this probe reports."""
    if len(buf) < IN_HEADER.size + INIT_IN.size:
        raise ValueError(f"short request: {len(buf)} bytes")
    _len, opcode, unique, *_ = IN_HEADER.unpack_from(buf)
    if opcode != FUSE_INIT:
        raise ValueError(f"first request has opcode {opcode}, not FUSE_INIT ({FUSE_INIT})")
    major, minor, _ra, flags, flags2 = INIT_IN.unpack_from(buf, IN_HEADER.size)
    return {"unique": unique, "major": major, "minor": minor, "flags": flags, "flags2": flags2}


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def probe() -> dict[str, int]:
    mnt = tempfile.mkdtemp(prefix="daxmode-init-probe.")
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    mounted = False
    try:
        data = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        _check(
            _libc.mount(b"daxmode-init-probe", mnt.encode(), b"fuse", MS_NOSUID | MS_NODEV, data),
            f"mount fuse on {mnt}",
        )
        mounted = True
        init = parse_init(os.read(fd, READ_SIZE))
        # Refuse the connection: the kernel marks it failed and unmounting is immediate.
        os.write(fd, OUT_HEADER.pack(OUT_HEADER.size, -errno.ENOSYS, init["unique"]))
        return init
    finally:
        if mounted:
            _check(_libc.umount2(mnt.encode(), 0), f"umount {mnt}")
        os.close(fd)
        os.rmdir(mnt)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: fuse_init_probe.py   (as root; see the module docstring)", file=sys.stderr)
        return 2
    try:
        init = probe()
    except (OSError, ValueError) as e:
        print(f"fuse_init_probe: {e}", file=sys.stderr)
        return 1
    bits = flags64(init["flags"], init["flags2"])
    print(
        f"init major={init['major']} minor={init['minor']} flags={init['flags']:#x} "
        f"flags2={init['flags2']:#x} init_ext={int(bool(init['flags'] & FUSE_INIT_EXT))} "
        f"dax_fmap={int(bool(bits & FUSE_DAX_FMAP))} cap_sys_rawio={int(has_cap(CAP_SYS_RAWIO))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
