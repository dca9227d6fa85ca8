"""In-guest, real kernel: the issue-16 isolation file is refused by a real mount, at mount time and
when appended under the live mount.

The file: 0644, interleaved, chunk 4 MiB over two 2 MiB strips, the first strip right in front of a
0600 file of uid 1000.  Walking the interleave arithmetic over it reads the other file's first
2 MiB; on the famfs kernel (dax data path) the same map would be handed to the kernel by GET_FMAP.
The mount uses ``--data-path auto``: the copy path on the stock kernel (``make vm-test``,
``make qemu-test``), the dax path on the famfs V10 kernel (``make famfs-kernel-test``), so both are
checked by the same test.  The judge is uid 65534 reading every file it may open through the
mount; the refusal is read from the mount (ENOENT), the server's log, ``famfs status`` and fsck.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from daxmode.famfs.media import layout as L

from .sysview import driver
from .test_famfs_mount import dx, ok

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
BUS = Path("/sys/bus/dax")
MNT = Path("/mnt/daxmode-isolation")
MiB = 1 << 20
SECRET = b"SECRET.."

pytestmark = [
    pytest.mark.guest,
    pytest.mark.shared_media,  # formats and writes the device other hosts share: one host at a time
    pytest.mark.skipif(not DEV or not BUS.is_dir(), reason="runs inside a test guest only"),
]


def _medium(writable: bool = True):  # type: ignore[no-untyped-def]
    from daxmode.famfs.medium import open_medium
    from daxmode.sysfs import Sysfs

    return open_medium(Sysfs(), DEV, writable=writable)


def _append(m, entry_for) -> int:  # type: ignore[no-untyped-def]
    """Append an entry the way a writer on another host would: slot, then both counters."""
    mv = memoryview(m.buf)
    try:
        log = mv[L.LOG_OFFSET : L.LOG_OFFSET + L.DEFAULT_LOG_LEN]
        m.sync.invalidate(log, 0, L.LOG_HDR_SIZE)
        idx = struct.unpack_from("<Q", log, L.LOG_HDR_COUNTERS_OFF + 8)[0]
        off = L.LOG_HDR_SIZE + idx * L.ENTRY_SIZE
        log[off : off + L.ENTRY_SIZE] = entry_for(idx)
        m.sync.writeback(log, off, L.ENTRY_SIZE)
        log[L.LOG_HDR_COUNTERS_OFF : L.LOG_HDR_COUNTERS_OFF + 16] = struct.pack("<QQ", idx + 1, idx + 1)
        m.sync.writeback(log, L.LOG_HDR_COUNTERS_OFF, 16)
        log.release()
        return idx
    finally:
        mv.release()


def _fill(m, off: int, length: int, tag: bytes) -> None:  # type: ignore[no-untyped-def]
    mv = memoryview(m.buf)
    try:
        mv[off : off + length] = (tag * (length // len(tag) + 1))[:length]
        m.sync.writeback(mv, off, length)
    finally:
        mv.release()


def nobody_sees_the_secret() -> list[str]:
    """Files under the mount (outside .meta) that uid 65534 can read and that hold the secret."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    cmd = (
        f"find {MNT} -path {MNT}/.meta -prune -o -type f -readable -print0 "
        f"| xargs -0 -r grep -l -a -F '{SECRET.decode()}' || true"
    )
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, preexec_fn=drop, timeout=300)
    assert "Permission denied" not in r.stderr or "priv" in r.stderr, r.stderr
    return r.stdout.split()


def evil(idx: int, name: str, strips: list[tuple[int, int, int]], size: int) -> bytes:
    return L.pack_interleaved_entry(idx, name, size, 4 * MiB, strips, mode=0o644)


@pytest.fixture
def crafted() -> int:
    assert driver() == "device_dax", "the harness hands over the device in devdax"
    ok("famfs", "mkfs", DEV, "--force")
    with _medium() as m:
        _append(m, lambda i: L.pack_mkdir_entry(i, "priv", mode=0o700, uid=1000, gid=1000))
        _append(m, lambda i: L.pack_file_entry(i, "priv/secret", 4 * MiB, [(0, 12 * MiB, 4 * MiB)],
                                                mode=0o600, uid=1000, gid=1000))  # fmt: skip
        _append(m, lambda i: L.pack_file_entry(i, "pub", 2 * MiB, [(0, 16 * MiB, 2 * MiB)]))
        idx = _append(m, lambda i: evil(i, "evil", [(0, 10 * MiB, 2 * MiB), (0, 40 * MiB, 2 * MiB)], 4 * MiB))
        _fill(m, 12 * MiB, 4 * MiB, SECRET)
        _fill(m, 16 * MiB, 2 * MiB, b"PUBLIC..")
    MNT.mkdir(parents=True, exist_ok=True)
    os.chmod(MNT.parent, 0o755)
    yield idx
    if any(line.split()[4] == str(MNT) for line in Path("/proc/self/mountinfo").read_text().splitlines()):
        dx("famfs", "umount", str(MNT))
    if driver() != "device_dax":
        ok("set", DEV, "devdax")


def test_the_isolation_file_is_refused_by_a_real_mount(crafted: int) -> None:
    idx = crafted
    rc, out, _err = dx("famfs", "fsck", DEV)
    assert rc == 12 and f"entry {idx} ('evil'): strip 0 holds 0x200000 bytes" in out, out
    r = subprocess.run(
        [sys.executable, "-m", "daxmode", "famfs", "mount", DEV, str(MNT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        stats = json.loads(os.getxattr(MNT, "user.daxmode.stats"))
        path = stats["data_path"]
        assert sorted(os.listdir(MNT)) == [".meta", "priv", "pub"]
        with pytest.raises(OSError) as e:
            open(MNT / "evil", "rb")  # noqa: SIM115 - never an inode, so never a GET_FMAP
        assert e.value.errno == errno.ENOENT
        assert (MNT / "pub").read_bytes()[:8] == b"PUBLIC.."
        assert nobody_sees_the_secret() == []
        assert str(idx) in stats["namespace"]["refused"], stats["namespace"]
        st = json.loads(ok("famfs", "status", "--json"))
        mine = [x for x in st["mounts"] if x["mountpoint"] == str(MNT)]
        assert any(f"entry {idx} ('evil')" in s for s in mine[0]["skipped_entries"]), mine
        # appended under the live mount (as another host would): refused on refresh too
        with _medium() as m:
            idx2 = _append(
                m, lambda i: evil(i, "evil2", [(0, 50 * MiB, 2 * MiB), (0, 10 * MiB, 2 * MiB)], 8 * MiB)
            )
            later = _append(m, lambda i: L.pack_file_entry(i, "later", 2 * MiB, [(0, 60 * MiB, 2 * MiB)]))
        names = sorted(os.listdir(MNT))
        assert "later" in names and "evil2" not in names, names
        with open(MNT / "later", "r+b") as f:  # through the mount: on the dax path only files reach data
            f.write(b"LATER...")
        assert (MNT / "later").read_bytes()[:8] == b"LATER..."
        assert nobody_sees_the_secret() == []
        stats = json.loads(os.getxattr(MNT, "user.daxmode.stats"))
        assert str(idx2) in stats["namespace"]["refused"] and later > idx2
        if path == "dax":  # the famfs kernel: every fmap sent was for a file that passed
            assert stats["fmaps_sent"] >= 2
        log = Path(json.loads(Path(_record_path()).read_text())["log"]).read_text()
        assert log.count(f"entry {idx} ('evil')") == 1 and log.count(f"entry {idx2} ('evil2')") == 1
    finally:
        rc, out, err = dx("famfs", "umount", str(MNT))
    assert rc == 0, (out, err)


def _record_path() -> str:
    from urllib.parse import quote

    return f"/run/daxmode/mounts/{quote(str(MNT), safe='')}.json"
