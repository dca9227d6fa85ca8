"""Two hosts, one shared dax device: famfs metadata and data written by one are read by the other.

Host A (index 0) formats the shared device, so its /opt/famfs/system_uuid makes it the master;
it creates directories and files with known data (contiguous through ``famfs cp``, interleaved
through the Python API).  Host B plays the log as a client and must see the same tree and read
the same bytes; its mutations are refused and leave the log untouched; A's replay is idempotent.
Then both hosts mount it with ``daxmode famfs mount`` (copy data path on a stock kernel, dax on a
famfs kernel) and must see each other's files and writes through their mounts; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
import shlex
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

DAXMODE = str(Path(sys.prefix) / "bin" / "daxmode")
PYTHON = str(Path(sys.prefix) / "bin" / "python")
SEED = 20260613
DATA_SIZE = 3 * 1024 * 1024 + 4097  # spans two allocation units, not a multiple of anything
IL_SIZE = 6 * 1024 * 1024 + 123


def known_data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sh(host, cmd: str, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    return host.run(["sh", "-c", cmd], timeout=timeout)


def ok(host, cmd: str, timeout: float = 300.0) -> str:  # type: ignore[no-untyped-def]
    r = sh(host, cmd, timeout)
    assert r.rc == 0, f"{host.name if hasattr(host, 'name') else host}: {cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def pair(hosts):  # type: ignore[no-untyped-def]
    if len(hosts) < 2:
        pytest.skip("needs two hosts sharing one device (qemu/cxl-mhd.sh --hosts 2)")
    a, b = hosts[0], hosts[1]
    dev = ok(a, "echo $DAXMODE_TEST_DEV").strip()
    assert dev, "DAXMODE_TEST_DEV is not set in the guest"
    assert ok(b, "echo $DAXMODE_TEST_DEV").strip() == dev
    return a, b, dev


def famfs(host, dev: str, *args: str, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    return sh(host, " ".join([DAXMODE, "famfs", *(shlex.quote(x) for x in args)]), timeout)


WRITE_SCRIPT = """
import random, sys
from daxmode.famfs.medium import open_famfs
from daxmode.famfs import Volume
seed, size, dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data = random.Random(seed).randbytes(size)
with open_famfs(dev, writable=True) as fs:
    v = fs.volume
    meta, _ = v.creat("shared/il.bin", size, nstrips=2, chunk=2 << 20, nbuckets=2, min_bucket=2 << 20)
    assert meta.interleaved, meta
    assert v.write(meta, data) == size
print("ok")
"""

READ_SCRIPT = """
import hashlib, sys
from daxmode.famfs.medium import open_famfs
dev, path = sys.argv[1], sys.argv[2]
with open_famfs(dev) as fs:
    f = fs.open(path)
    h = hashlib.sha256()
    for chunk in f.chunks():
        h.update(chunk)
    print(h.hexdigest(), f.size, len(f.runs))
"""


def test_two_hosts_share_famfs(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, dev = pair
    # --- host A: format and populate -------------------------------------------------------
    r = famfs(a, dev, "mkfs", dev, "--force", "--json")
    assert r.rc == 0, r.stderr
    sb = json.loads(r.stdout)["superblock"]
    a_uuid = ok(a, "cat /opt/famfs/system_uuid").strip("\0\n ")
    assert sb["system_uuid"] == a_uuid
    assert famfs(a, dev, "mkdir", dev, "-p", "shared/dir1").rc == 0
    data = known_data(SEED, DATA_SIZE)
    gen = f"import random,sys; sys.stdout.buffer.write(random.Random({SEED}).randbytes({DATA_SIZE}))"
    ok(a, f"{PYTHON} -c {shlex.quote(gen)} > /tmp/data.bin")
    r = famfs(a, dev, "cp", dev, "/tmp/data.bin", "shared/dir1/")
    assert r.rc == 0, r.stderr
    assert famfs(a, dev, "creat", dev, "shared/empty5m", "-s", "5M").rc == 0
    ok(a, f"{PYTHON} -c {shlex.quote(WRITE_SCRIPT)} {SEED + 1} {IL_SIZE} {dev}")
    r = famfs(a, dev, "logplay", dev, "--json")
    assert r.rc == 0, r.stderr
    play_a = json.loads(r.stdout)
    assert play_a["role"] == "master" and play_a["files"] == 3 and play_a["directories"] == 2

    # --- host B: play as a client, read identical bytes -------------------------------------
    r = famfs(b, dev, "logplay", dev, "--json")
    assert r.rc == 0, r.stderr
    play_b = json.loads(r.stdout)
    assert play_b["role"] == "client"
    assert play_b["tree"] == play_a["tree"]
    got = sh(b, f"{DAXMODE} famfs cat {dev} shared/dir1/data.bin | sha256sum")
    assert got.rc == 0 and got.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    out = ok(b, f"{PYTHON} -c {shlex.quote(READ_SCRIPT)} {dev} shared/il.bin").split()
    assert out[0] == hashlib.sha256(known_data(SEED + 1, IL_SIZE)).hexdigest()
    assert int(out[1]) == IL_SIZE and int(out[2]) > 1  # interleaved: more than one run
    r = famfs(b, dev, "fsck", dev, "--json")
    assert r.rc == 0 and json.loads(r.stdout)["ok"], r.stdout

    # --- host B cannot append ----------------------------------------------------------------
    for args in (("mkdir", dev, "b-was-here"), ("creat", dev, "b-file", "-s", "1M")):
        r = famfs(b, dev, *args)
        assert r.rc == 17 and "famfs client" in r.stderr, (args, r.rc, r.stderr)
    r = famfs(b, dev, "mkfs", dev)
    assert r.rc == 15 and "owned by another host" in r.stderr

    # --- host A re-plays idempotently ----------------------------------------------------------
    for _ in range(2):
        r = famfs(a, dev, "logplay", dev, "--json")
        assert json.loads(r.stdout) == play_a
    # data written on A after B's first look is visible to B at once (one shared memory)
    assert famfs(a, dev, "mkdir", dev, "shared/later").rc == 0
    r = famfs(b, dev, "ls", dev, "shared", "--json")
    assert [x["path"] for x in json.loads(r.stdout)] == [
        "shared/dir1",
        "shared/empty5m",
        "shared/il.bin",
        "shared/later",
    ]


MNT = "/mnt/daxmode-famfs"

WRITE_AT = """
import sys
path, off, text = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
with open(path, "r+b") as f:
    f.seek(off)
    f.write(text)
print("ok")
"""

READ_AT = """
import sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    f.seek(off)
    sys.stdout.write(f.read(n).decode())
"""

MMAP_WRITE_AT = """
import mmap, os, sys
path, off, text = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
fd = os.open(path, os.O_RDWR)
with mmap.mmap(fd, off + len(text), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
    m[off : off + len(text)] = text
    m.flush()
os.close(fd)
print("ok")
"""

MMAP_READ_AT = """
import mmap, os, sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
with mmap.mmap(fd, off + n, mmap.MAP_SHARED, mmap.PROT_READ) as m:
    sys.stdout.write(m[off : off + n].decode())
os.close(fd)
"""

STATS = "import os, sys; print(os.getxattr(sys.argv[1], 'user.daxmode.stats').decode())"


def driver(host, dev: str) -> str:  # type: ignore[no-untyped-def]
    return ok(host, f"basename $(readlink /sys/bus/dax/devices/{dev}/driver)").strip()


def mounted(host) -> str:  # type: ignore[no-untyped-def]
    """'fstype source' of the mount on MNT in the guest's mountinfo ('' when not mounted)."""
    for line in sh(host, f"grep -F ' {MNT} ' /proc/self/mountinfo").stdout.splitlines():
        f = line.split()
        if f[4] == MNT:
            i = f.index("-")
            return f"{f[i + 1]} {f[i + 2]}"
    return ""


def test_two_hosts_mount_and_share(pair) -> None:  # type: ignore[no-untyped-def]
    """A and B mount the famfs A wrote; B reads A's bytes through its mount, sees A's later file and
    A's writes through A's mount; both unmount and the device is back in its mode on both.

    The data path follows the kernel (``famfs status``): copy on a stock kernel, dax on a fuse famfs
    kernel, famfs-v1 on the standalone famfs module.  On famfs-v1 there is no server: the kernel
    serves the files, a file A adds reaches B's mount by ``famfs logplay MNT``, and the interleaved
    file (four chunks) is refused because the v1 ABI holds two extents per file."""
    a, b, dev = pair
    before = {h.name: driver(h, dev) for h in (a, b)}
    want = json.loads(famfs(a, dev, "status", "--json").stdout)["kernel"]["data_path"]
    v1 = want == "famfs-v1"
    for h in (a, b):
        ok(h, f"mkdir -p {MNT}")
        r = famfs(h, dev, "mount", dev, MNT)
        assert r.rc == 0, (h.name, r.stderr)
        fstype, source = mounted(h).split()
        assert (fstype, source) == ("famfs" if v1 else "fuse.famfs", f"/dev/{dev}")
        if v1:  # the refusal is named, not silent
            assert "refused entry" in r.stdout and "shared/il.bin" in r.stdout, r.stdout
    for h in (a, b):
        assert driver(h, dev) == ("fsdev_dax" if want == "dax" else "device_dax")
    data = known_data(SEED, DATA_SIZE)
    got = ok(b, f"sha256sum {MNT}/shared/dir1/data.bin").split()[0]
    assert got == hashlib.sha256(data).hexdigest()
    if v1:
        assert sh(b, f"test -e {MNT}/shared/il.bin").rc != 0
    else:
        got = ok(b, f"sha256sum {MNT}/shared/il.bin").split()[0]  # interleaved: two strips
        assert got == hashlib.sha256(known_data(SEED + 1, IL_SIZE)).hexdigest()
    # a file A creates after both mounted shows up on B's mount, same bytes
    gen = f"import random,sys; sys.stdout.buffer.write(random.Random({SEED + 7}).randbytes(1234567))"
    ok(a, f"{PYTHON} -c {shlex.quote(gen)} > /tmp/later.bin")
    r = famfs(a, dev, "cp", dev, "/tmp/later.bin", "shared/later.bin")
    assert r.rc == 0, r.stderr
    if v1:
        assert sh(b, f"test -e {MNT}/shared/later.bin").rc != 0  # not before logplay
        for h in (a, b):
            r = famfs(h, dev, "logplay", MNT, "--json")
            assert r.rc == 0, (h.name, r.stdout, r.stderr)
            assert json.loads(r.stdout)["created_files"] == ["shared/later.bin"], r.stdout
    got = ok(b, f"sha256sum {MNT}/shared/later.bin").split()[0]
    assert got == hashlib.sha256(known_data(SEED + 7, 1234567)).hexdigest()
    # writes on A through A's mount are read on B through B's mount (mmap on famfs-v1: DAX both ends)
    text = f"A wrote this through {MNT} at {SEED}"
    write, read = (MMAP_WRITE_AT, MMAP_READ_AT) if v1 else (WRITE_AT, READ_AT)
    ok(a, f"{PYTHON} -c {shlex.quote(write)} {MNT}/shared/dir1/data.bin 65536 {shlex.quote(text)}")
    got = ok(b, f"{PYTHON} -c {shlex.quote(read)} {MNT}/shared/dir1/data.bin 65536 {len(text)}")
    assert got == text
    for h in (a, b):
        if v1:  # the kernel's maps read back (MAP_GET/MAP_GETEXT) equal the log's
            r = famfs(h, dev, "check", MNT, "--json")
            assert r.rc == 0 and json.loads(r.stdout)["ok"], (h.name, r.stdout, r.stderr)
            continue
        st = json.loads(ok(h, f"{PYTHON} -c {shlex.quote(STATS)} {MNT}"))
        reqs = st["server"]["requests"]
        assert st["data_path"] == want, (h.name, st)
        if want == "dax":  # no file data through either server; one GET_FMAP per file opened
            assert "READ" not in reqs and "WRITE" not in reqs and reqs["GET_FMAP"] == st["fmaps_sent"], st
        else:  # A wrote through its mount, B read through its own
            assert reqs.get("WRITE" if h is a else "READ", 0) > 0, (h.name, st)
    # both unmount; the device is back in the mode it had on each host
    for h in (a, b):
        r = famfs(h, dev, "umount", MNT)
        assert r.rc == 0, (h.name, r.stderr)
        assert mounted(h) == ""
        assert driver(h, dev) == before[h.name]


def test_cleanup_kill_superblock(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b, dev = pair
    r = famfs(a, dev, "mkfs", dev, "--force", "--kill")
    assert r.rc == 0, r.stderr
