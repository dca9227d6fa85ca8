"""The mounted namespace: inodes from the log, incremental re-play, famfs logplay's rules."""

from __future__ import annotations

import stat
import struct
import time

from fuseworld import ME, MiB, log_view, populate

from daxmode.famfs import Volume
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.log import play, scan_log
from daxmode.famfs.mount.namespace import (
    FIRST_ENTRY_ID,
    LOG_ID,
    META_DIR_ID,
    ROOT_ID,
    SUPERBLOCK_ID,
    Namespace,
)
from daxmode.fsdev import Mapping


def test_initial_play_matches_logplay(vol: Volume, medium: Mapping) -> None:
    populate(vol)
    ns = Namespace(vol.sb, log_view(medium), is_master=True)
    tree = play(scan_log(log_view(medium), vol.sb.log_len).records)
    assert ns.played == 5 and (ns.files, ns.dirs) == (len(tree.files), len(tree.dirs)) == (3, 2)
    root = ns.get(ROOT_ID)
    assert root is not None and root.order == [b".meta", b"d", b"priv", b"il.bin"]
    d = ns.lookup(ROOT_ID, b"d")
    assert d is not None and d.nodeid == 0 + FIRST_ENTRY_ID and d.is_dir and d.mode == stat.S_IFDIR | 0o755
    a = ns.lookup(d.nodeid, b"a.bin")
    assert a is not None and a.size == 3 * MiB + 17 and a.mode == stat.S_IFREG | 0o644 and a.meta is not None
    assert a.allocated == 4 * MiB and ns.path_of(a.nodeid) == "d/a.bin"
    priv = ns.lookup(ROOT_ID, b"priv")
    assert priv is not None and (priv.perm, priv.uid, priv.gid) == (0o700, 1000, 1000)
    assert root.nsubdirs == 3  # .meta, d, priv
    assert ns.lookup(ROOT_ID, b"nope") is None


def test_meta_files(vol: Volume, medium: Mapping) -> None:
    ns = Namespace(vol.sb, log_view(medium), is_master=True)
    meta = ns.lookup(ROOT_ID, b".meta")
    assert meta is not None and meta.nodeid == META_DIR_ID
    sb = ns.lookup(META_DIR_ID, b".superblock")
    log = ns.lookup(META_DIR_ID, b".log")
    assert sb is not None and sb.nodeid == SUPERBLOCK_ID and sb.perm == 0o444 and sb.size == 2 * MiB
    assert sb.region == (0, 2 * MiB) and sb.segments(0, 100) == [(0, 100)]
    assert log is not None and log.nodeid == LOG_ID and log.perm == 0o644 and log.region == (2 * MiB, 8 * MiB)
    client = Namespace(vol.sb, log_view(medium), is_master=False)
    got = client.lookup(META_DIR_ID, b".log")
    assert got is not None and got.perm == 0o444
    boot = Namespace(None, None)  # reading the metadata through the mount: only the superblock at first
    assert boot.lookup(META_DIR_ID, b".superblock") is not None and boot.lookup(META_DIR_ID, b".log") is None
    boot.attach_log(vol.sb, log_view(medium))
    assert boot.lookup(META_DIR_ID, b".log") is not None


def test_new_entries_appear_without_remount(vol: Volume, medium: Mapping) -> None:
    populate(vol)
    ns = Namespace(vol.sb, log_view(medium), is_master=True)
    d = ns.lookup(ROOT_ID, b"d")
    assert d is not None
    vol.creat("d/later", 4096)
    vol.mkdir("d/sub")
    vol.creat("d/sub/deep", 8192)
    assert ns.played == 5
    later = ns.lookup(d.nodeid, b"later")  # a miss re-plays the log
    assert later is not None and later.size == 4096 and ns.played == 8
    sub = ns.lookup(d.nodeid, b"sub")
    assert sub is not None and [*sub.order] == [b"deep"]
    assert ns.refresh() == 0  # nothing new
    assert d.order == [b"a.bin", b"later", b"sub"]  # readdir order = log order, cookies stay valid


def _append_raw(m: Mapping, entry_for) -> int:  # type: ignore[no-untyped-def]
    lm = log_view(m)
    idx = struct.unpack_from("<Q", lm, 40)[0]
    off = L.LOG_HDR_SIZE + idx * L.ENTRY_SIZE
    lm[off : off + L.ENTRY_SIZE] = entry_for(idx)
    struct.pack_into("<QQ", lm, 32, idx + 1, idx + 1)
    return idx


def test_logplay_rules(vol: Volume, medium: Mapping) -> None:
    populate(vol)
    ns = Namespace(vol.sb, log_view(medium), is_master=True)
    _append_raw(
        medium, lambda s: L.pack_file_entry(s, "d/a.bin", 4096, [(0, 100 * MiB, 2 * MiB)])
    )  # duplicate
    _append_raw(
        medium, lambda s: L.pack_file_entry(s, "ghost/x", 4096, [(0, 102 * MiB, 2 * MiB)])
    )  # no parent
    _append_raw(medium, lambda s: L.pack_mkdir_entry(s, ".meta/evil"))  # reserved
    torn = _append_raw(medium, lambda s: L.pack_mkdir_entry(s, "torn"))
    lm = log_view(medium)
    lm[L.LOG_HDR_SIZE + torn * L.ENTRY_SIZE + 30] ^= 0xFF  # break its CRC
    _append_raw(medium, lambda s: L.pack_mkdir_entry(s, "after"))
    assert ns.refresh() == 3  # the corrupt slot stops the play until it has held still SETTLE s
    assert ns.lookup(ROOT_ID, b"after") is None and ns.played == torn
    ns.SETTLE = 0.0
    assert ns.refresh() == 2
    assert ns.skipped == 1
    errs = "\n".join(ns.errors)
    assert (
        "parent directory of 'ghost/x'" in errs and "reserved .meta" in errs and f"entry {torn}: CRC" in errs
    )
    assert ns.lookup(ROOT_ID, b"after") is not None and ns.lookup(ROOT_ID, b"torn") is None
    a = ns.lookup(ns.by_path["d"], b"a.bin")
    assert a is not None and a.size == 3 * MiB + 17  # the first entry wins


def test_full_log_plays(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daxmode.famfs import mkfs
    from daxmode.fsdev import create_image, map_image

    p = tmp_path / "big.img"
    create_image(p, 64 << 30)  # sparse
    with map_image(p) as m:
        mkfs(m, ME)
        v = Volume(m, ME)
        while v.next_index < v.capacity:
            i = v.next_index
            if i % 8 == 0:
                v.mkdir(f"d{i}")
            else:
                v.creat(f"d{i - i % 8}/f{i}", 4096 + i)
        v.close()
        t = time.process_time()
        ns = Namespace(v.sb, log_view(m), is_master=True)
        cpu = time.process_time() - t
        assert ns.played == 15420 and ns.files + ns.dirs == 15420 and not ns.errors
        print(f"played a full log in {cpu:.3f} s CPU")
        ns.detach_log()


RACE_ENTRIES = 1000


def test_reader_racing_a_writer_whose_counters_run_ahead(vol: Volume, medium: Mapping) -> None:
    """A writer that publishes the counters *before* each slot (what a reader on another host can
    see when the lines arrive out of order), racing a reader that refreshes without pause: every
    entry is played exactly once, none is lost to a counter read ahead of its slot."""
    import threading

    ns = Namespace(vol.sb, log_view(medium), device_size=medium.size)
    ns.SETTLE = 3600.0  # nothing here is corrupt: a slot that does not check must only be waited for
    lm = log_view(medium)
    start = struct.unpack_from("<Q", lm, L.LOG_HDR_COUNTERS_OFF + 8)[0]
    done = threading.Event()
    ahead: set[int] = set()  # counter values the reader met ahead of the slot they cover

    def reader() -> None:
        while not done.is_set():
            ns.refresh()
            n = struct.unpack_from("<Q", lm, L.LOG_HDR_COUNTERS_OFF + 8)[0]
            if n > ns.played:
                ahead.add(n)
            time.sleep(0)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in range(RACE_ENTRIES):
            i = start + k
            struct.pack_into("<QQ", lm, L.LOG_HDR_COUNTERS_OFF, i + 1, i + 1)  # counters first
            time.sleep(0)  # let the reader see them ahead of the slot
            off = L.LOG_HDR_SIZE + i * L.ENTRY_SIZE
            lm[off : off + L.ENTRY_SIZE] = L.pack_mkdir_entry(i, f"r{k}")
    finally:
        done.set()
        t.join()
    ns.refresh()
    assert ns.played == start + RACE_ENTRIES and ns.errors == []
    assert all(f"r{k}" in ns.by_path for k in range(RACE_ENTRIES))
    assert ahead  # the race did happen: the reader met counters ahead of their slot
    print(f"race: {RACE_ENTRIES} entries, counters met ahead of their slot for {len(ahead)} of them")
    lm.release()
    ns.detach_log()
