"""The crafted-media table through real FUSE mounts on this host (root, /dev/fuse), judged by
uid 65534 reading through the mount: at mount time (every crafted entry in one image), appended
one by one under a live mount, and the log's counters and slots flipped under a live mount.

The judge runs as nobody with the system Python: it walks the mount, reads every file it may
open and reports any byte of the secret, the superblock or the log it got."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from crafted import (
    BASE_ENTRIES,
    CASES,
    IMAGE_SIZE,
    MARKERS,
    build_base,
    commit,
    fill,
    log_of,
    next_index,
    put,
)
from test_mount_host import World, as_nobody
from test_mount_host import w as w

from daxmode.famfs import mkfs
from daxmode.famfs.media import layout as L
from daxmode.famfs.mount import records as S
from daxmode.fsdev import create_image, map_image

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="real FUSE mounts need /dev/fuse and root"
)
MiB = 1 << 20

JUDGE = r"""
import os, sys, json
markers = [bytes.fromhex(h) for h in sys.argv[2].split(",")]
seen, hits, denied = [], [], 0
for d, dirs, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(d, f)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except PermissionError:
            denied += 1
            continue
        seen.append(os.path.relpath(p, sys.argv[1]))
        hits += [[os.path.relpath(p, sys.argv[1]), m.hex()] for m in markers if m in data]
print(json.dumps({"seen": seen, "hits": hits, "denied": denied}))
"""


def judge(mnt: Path) -> dict[str, object]:
    """What nobody reads through the mount (meta files excluded: nobody may read .meta/.log of a
    client mount, and its bytes are the log by design)."""
    r = as_nobody("/usr/bin/python3", "-c", JUDGE, str(mnt), ",".join(m.hex() for m in MARKERS))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    out["hits"] = [h for h in out["hits"] if not h[0].startswith(".meta/")]
    return out


def base_image(w: World) -> None:
    w.img.unlink()
    create_image(w.img, IMAGE_SIZE)
    with map_image(w.img) as m:
        mkfs(m, w.me)
        build_base(m.buf)


def server_log(w: World) -> str:
    return S.log_path(w.sysfs, str(w.mnt)).read_text()


TABLE = [c for c in CASES if c.cls != "counters"]


def test_every_crafted_entry_at_mount_time(w: World) -> None:
    base_image(w)
    with map_image(w.img) as m:
        log = log_of(m.buf)
        for c in TABLE:
            c.apply(log, m.buf, next_index(log))
        log.release()
    w.famfs("mount", str(w.img), str(w.mnt))
    got = judge(w.mnt)
    assert got["hits"] == [], got
    time.sleep(1.2)  # corrupt slots are skipped once they held still for a second (Namespace.SETTLE)
    got = judge(w.mnt)
    assert got["hits"] == [], got
    assert {"pub", "il"} <= set(got["seen"])  # type: ignore[arg-type]
    for c in TABLE:
        if c.expect == "refused":
            assert not os.path.lexists(w.mnt / c.path), c.name
    st = json.loads(w.famfs("status", "--json").stdout)
    skipped = st["mounts"][0]["skipped_entries"]
    refused = [s for s in skipped if "refused, not served" in s]
    assert len(refused) >= sum(c.expect == "refused" for c in TABLE)
    text = server_log(w)
    for why in skipped:  # each named once in the server's log
        assert text.count(why) == 1, why
    w.famfs("umount", str(w.mnt))


def test_every_crafted_entry_appended_live(w: World) -> None:
    base_image(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    assert judge(w.mnt)["hits"] == []
    with map_image(w.img) as m:  # the server maps the same image shared: appends are seen
        log = log_of(m.buf)
        for c in TABLE:
            c.apply(log, m.buf, next_index(log))
            got = judge(w.mnt)  # nobody lists (a refresh) and reads everything
            assert got["hits"] == [], (c.name, got)
            if c.expect == "refused":
                assert not os.path.lexists(w.mnt / c.path), c.name
        log.release()
    st = json.loads(w.famfs("status", "--json").stdout)
    assert sum("refused, not served" in s for s in st["mounts"][0]["skipped_entries"]) >= sum(
        c.expect == "refused" for c in TABLE
    )
    w.famfs("umount", str(w.mnt))


def _late(log: memoryview, buf: object, i: int, name: str, off: int) -> bytes:
    entry = L.pack_file_entry(i, name, 2 * MiB, [(0, off, 2 * MiB)], mode=0o644)
    fill(buf, off, 2 * MiB, name.encode().ljust(8, b"."))
    return entry


def _ls(w: World) -> list[str]:
    r = as_nobody("ls", "-a", str(w.mnt))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_counters_and_slots_flipped_under_a_live_mount(w: World) -> None:
    """A header read while its counters run ahead of the slots must not mark them played."""
    base_image(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    n = BASE_ENTRIES
    with map_image(w.img) as m:
        log = log_of(m.buf)
        # 1. the counters say three more entries; no slot is written yet
        commit(log, n + 3)
        assert "late0" not in _ls(w)
        # 2. the slots arrive: all three appear, no remount
        for k in range(3):
            put(log, n + k, _late(log, m.buf, n + k, f"late{k}", (40 + 2 * k) * MiB))
        names = _ls(w)
        assert {"late0", "late1", "late2"} <= set(names), names
        assert (w.mnt / "late1").read_bytes()[:8] == b"late1..."
        n += 3
        # 3. next_seqnum ahead of next_index (famfs bumps it first); then next_index follows
        put(log, n, _late(log, m.buf, n, "seqahead", 50 * MiB))
        commit(log, n, seq=n + 1)
        assert "seqahead" not in _ls(w)
        commit(log, n + 1)
        assert "seqahead" in _ls(w)
        n += 1
        # 4. a half-written slot under the counters, completed a moment later
        e = _late(log, m.buf, n, "torn", 52 * MiB)
        off = L.LOG_HDR_SIZE + n * L.ENTRY_SIZE
        log[off : off + 200] = e[:200]
        commit(log, n + 1)
        assert "torn" not in _ls(w)
        put(log, n, e)
        assert "torn" in _ls(w)
        n += 1
        # 5. counters past the log's end, then back: nothing lost, the next file still appears
        struct.pack_into("<QQ", log, L.LOG_HDR_COUNTERS_OFF, (1 << 64) - 1, (1 << 64) - 1)
        _ls(w)
        commit(log, n)
        put(log, n, _late(log, m.buf, n, "after", 54 * MiB))
        commit(log, n + 1)
        assert "after" in _ls(w)
        # 6. a corrupt slot that holds still is skipped once it has (SETTLE, 1 s), the rest plays
        bad = bytearray(_late(log, m.buf, n + 1, "corrupt", 56 * MiB))
        bad[100] ^= 1
        put(log, n + 1, bytes(bad))
        put(log, n + 2, _late(log, m.buf, n + 2, "behind", 58 * MiB))
        commit(log, n + 3)
        assert "behind" not in _ls(w)
        time.sleep(1.2)
        _ls(w)
        assert "behind" in _ls(w)
        log.release()
    got = judge(w.mnt)
    assert got["hits"] == []
    text = server_log(w)
    assert text.count(f"entry {n + 1}: CRC mismatch") == 1, text
    w.famfs("umount", str(w.mnt))


def test_mkfs_refuses_a_mounted_image_by_any_name(w: World) -> None:
    """mountinfo names the image; mkfs compares inodes, so another name of it is refused too."""
    base_image(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    alias = w.base / "alias.img"
    os.link(w.img, alias)
    for target in (str(w.img), str(alias)):
        for extra in ([], ["--force"], ["--force", "--kill"]):
            r = w.famfs("mkfs", *extra, target, check=False)
            assert r.returncode == 7 and f"is mounted at {w.mnt}" in r.stderr, (target, extra, r.stderr)
    assert judge(w.mnt)["seen"]  # still served
    w.famfs("umount", str(w.mnt))
    S.remove(w.sysfs, str(w.mnt))
    assert w.famfs("mkfs", "--force", str(alias)).returncode == 0
