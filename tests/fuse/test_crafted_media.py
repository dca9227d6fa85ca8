"""The crafted-media table (tests/fuse/crafted.py), one image file per case, through every reader:
fsck, the log as the CLI plays it, the mount's namespace at mount time and on a live refresh, the
copy-path READ handler and the GET_FMAP encoder.  The judge: no file an unprivileged reader
(uid 65534) may open returns a byte of the secret, the superblock or the log, and no refused
entry has an inode or a map.  Real mounts of the same table: test_crafted_mount.py."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from crafted import (
    BASE_ENTRIES,
    CASES,
    IMAGE_SIZE,
    NOBODY,
    SECRET_EXT,
    Case,
    build_base,
    hostile_bytes,
    log_of,
)
from fuseworld import ME

from daxmode.famfs import Volume, mkfs
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.mount.handlers import COPY, DAX, Device, FamfsFuse
from daxmode.famfs.mount.namespace import Namespace
from daxmode.fsdev import create_image, map_image
from daxmode.fuse import fmap as F
from daxmode.fuse import proto as P
from daxmode.fuse.server import FuseError

MiB = 1 << 20
BASE_DATA = {"pub": b"PUBLIC..", "il": b"INTERLV."}


def readable_by_nobody(perm: int, uid: int) -> bool:
    return bool(perm & 0o004) or (uid == NOBODY and bool(perm & 0o400))


def judge(ns: Namespace, dev: Device, case: Case) -> None:
    """Every file nobody may read returns only its own bytes, through READ and through its fmap."""
    copy = FamfsFuse(ns, COPY, device=dev)
    dax = FamfsFuse(ns, DAX, daxdev="/dev/dax0.0")
    read = copy.handlers()[P.READ]
    for ino in ns.regular_files():
        if ino.meta is None:
            continue  # .meta files: root only in practice; not crafted
        path = ns.path_of(ino.nodeid)
        if readable_by_nobody(ino.perm, ino.uid):
            hdr = P.InHeader(80, P.READ, 1, ino.nodeid, NOBODY, NOBODY, 1, 0)
            got = b"".join(bytes(v) for v in read(hdr, memoryview(P.pack_read_in(ino.nodeid, 0, ino.size))))
            assert len(got) == ino.size, (case.name, path)
            assert hostile_bytes(got) == [], (case.name, path)
            if path in BASE_DATA:
                assert got == (BASE_DATA[path] * (ino.size // 8 + 1))[: ino.size], (case.name, path)
        try:
            reply = dax.fmap(ino)
        except F.FmapError:
            continue
        assert F.kernel_problems(reply) == []
        fm = F.decode(reply)
        lo, hi = SECRET_EXT[0], SECRET_EXT[0] + SECRET_EXT[1]
        for off in [*range(0, ino.size, MiB // 2), ino.size - 1]:
            d = F.resolve(fm, off)
            assert d >= L.data_start(L.DEFAULT_LOG_LEN) and d < IMAGE_SIZE, (case.name, path, off)
            if path != "priv/secret":
                assert not lo <= d < hi, (case.name, path, off, hex(d))


def write_base(p: Path) -> Path:
    """A sparse image holding the base volume (each case writes its own)."""
    create_image(p, IMAGE_SIZE)
    with map_image(p) as m:
        mkfs(m, ME)
        build_base(m.buf)
    return p


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    yield write_base(tmp_path / "base.img")


def _check_namespace(ns: Namespace, case: Case, first: int) -> None:
    if case.expect == "refused":
        assert ns.validator is not None and any(i >= first for i in ns.validator.refused), case.name
        assert case.path not in ns.by_path
        assert any(f"({case.path!r})" in e for e in ns.errors), ns.errors
    elif case.expect == "skipped":
        assert case.path == "" or case.path not in ns.by_path or case.path == "priv/secret"
        if case.path == "priv/secret":  # the duplicate is skipped: the first entry keeps the name
            ino = ns.get(ns.by_path["priv/secret"])
            assert ino is not None and ino.meta is not None and ino.meta.index == 2
    elif case.expect == "visible":
        assert case.path in ns.by_path, (case.name, ns.errors)
    for name in ("pub", "il", "priv/secret"):
        if case.name != "counters:backwards":
            assert name in ns.by_path, (case.name, name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_crafted_image(case: Case, tmp_path: Path) -> None:
    img = write_base(tmp_path / "case.img")  # one image per case, written by the test
    with map_image(img) as m:
        log = log_of(m.buf)
        case.apply(log, m.buf, BASE_ENTRIES)
        # fsck names the refusal (or, for a dead header, refuses the volume)
        rep = fsck(m.buf, m.size)
        if case.expect == "fatal":
            assert rep.fatal, rep.problems
        else:
            assert rep.fatal == [], (case.name, rep.fatal)
        if case.expect == "refused":
            assert any(i >= BASE_ENTRIES for i in rep.refused), (case.name, rep.problems)
            assert all("refused, not served" in why for why in rep.refused.values())
        elif case.expect == "skipped":
            assert rep.problems, case.name
        elif case.expect == "visible":
            assert rep.problems == [], (case.name, rep.problems)
        if case.expect == "fatal":
            log.release()
            return
        # the CLI's view (famfs ls/cat): a refused file is not in the tree
        with Volume(m, ME) as vol:
            if case.expect in ("refused", "skipped") and case.path != "priv/secret":
                assert case.path not in vol.tree.files
            if case.expect == "refused":
                assert set(vol.tree.validator.refused) == set(rep.refused)  # type: ignore[union-attr]
        # mount-time play
        dev = Device(memoryview(m.buf), m.sync, m.size)
        ns = Namespace(vol.sb, log, is_master=False, device_size=m.size)
        ns.SETTLE = 0.0
        ns.refresh()  # a non-empty bad slot is skipped once it held still
        _check_namespace(ns, case, BASE_ENTRIES)
        judge(ns, dev, case)
        ns.detach_log()
        dev.buf.release()


LIVE = [c for c in CASES if c.expect != "fatal"]  # a dead header is refused at mount time instead


@pytest.mark.parametrize("case", LIVE, ids=[c.name for c in LIVE])
def test_crafted_live_append(case: Case, tmp_path: Path) -> None:
    """The same entries appended under a live namespace: every refresh runs the same checks."""
    img = write_base(tmp_path / "live.img")
    with map_image(img) as m:
        log = log_of(m.buf)
        with Volume(m, ME) as vol:
            sb = vol.sb
        dev = Device(memoryview(m.buf), m.sync, m.size)
        logged: list[str] = []
        ns = Namespace(sb, log, device_size=m.size, on_error=logged.append)
        ns.SETTLE = 0.0
        assert ns.played == BASE_ENTRIES and ns.errors == []
        case.apply(log, m.buf, BASE_ENTRIES)
        ns.refresh()
        ns.refresh()
        if case.name != "counters:backwards":
            _check_namespace(ns, case, BASE_ENTRIES)
        assert logged == ns.errors and len(set(logged)) == len(logged)  # each named once
        judge(ns, dev, case)
        ns.detach_log()
        dev.buf.release()


def test_the_issue_file_reads_eio_free_and_secret_free(base: Path) -> None:
    """The issue's file, spelled out: 0644, chunk 4 MiB over two 2 MiB strips, the first strip right
    in front of a 0600 file.  Before the validator, reading it returned 2 MiB of the secret."""
    with map_image(base) as m:
        log = log_of(m.buf)
        CASES[0].apply(log, m.buf, BASE_ENTRIES)
        meta = L.decode_entry(log, L.LOG_HDR_SIZE + BASE_ENTRIES * L.ENTRY_SIZE, BASE_ENTRIES)
        assert isinstance(meta, L.FileMeta)
        # what the unchecked interleave arithmetic would read: the secret's first 2 MiB
        segs = L.file_segments(meta)
        assert any(d < SECRET_EXT[0] + SECRET_EXT[1] and d + n > SECRET_EXT[0] for d, n in segs)
        rep = fsck(m.buf, m.size)
        assert (
            "strip 0 holds 0x200000 bytes but a 4194304-byte file puts 1 whole 0x400000-byte chunk"
            in (rep.refused[BASE_ENTRIES])
        )
        ns = Namespace(Volume(m, ME).sb, log, device_size=m.size)
        assert "chunk4m-strips2m" not in ns.by_path
        dax = FamfsFuse(ns, DAX, daxdev="/dev/dax0.0")
        with pytest.raises(FuseError) as e:  # never an inode, so never a map: LOOKUP fails first
            dax.lookup(
                P.InHeader(60, P.LOOKUP, 1, 1, NOBODY, NOBODY, 1, 0), memoryview(b"chunk4m-strips2m\0")
            )
        assert e.value.errno == errno.ENOENT
        ns.detach_log()


def test_fmap_encoder_refuses_what_the_validator_refuses(base: Path) -> None:
    """Even an inode that somehow holds a bad map (played before a validator existed) gets no fmap."""
    with map_image(base) as m:
        ns = Namespace(Volume(m, ME).sb, log_of(m.buf), device_size=m.size)
        ino = ns.get(ns.by_path["il"])
        assert ino is not None and ino.meta is not None
        bad = ino.meta._replace(chunk_size=4 * MiB)  # 4 MiB chunks over its two 2 MiB strips
        ino.meta = bad
        with pytest.raises(F.FmapError, match="extent validator refuses"):
            FamfsFuse(ns, DAX, daxdev="/dev/dax0.0").fmap(ino)
        ns.detach_log()


def test_case_table_covers_every_class() -> None:
    classes = {c.cls for c in CASES}
    assert classes == {"interleave", "overlap", "reserved", "placement", "names", "counters"}
    assert len(CASES) >= 60


def test_require_admitted_is_the_check_before_any_map_ioctl(tmp_path: Path) -> None:
    from daxmode.errors import FamfsError
    from daxmode.famfs.media.extents import require_admitted

    with map_image(write_base(tmp_path / "v.img")) as m:
        log = log_of(m.buf)
        CASES[0].apply(log, m.buf, BASE_ENTRIES)  # the issue's file
        with Volume(m, ME) as vol:
            val = vol.tree.validator
            assert val is not None
            for path in ("pub", "il", "priv/secret"):
                require_admitted(val, vol.tree.files[path])
            bad = L.decode_entry(log, L.LOG_HDR_SIZE + BASE_ENTRIES * L.ENTRY_SIZE, BASE_ENTRIES)
            assert isinstance(bad, L.FileMeta)
            with pytest.raises(FamfsError, match="strip 0 holds"):
                require_admitted(val, bad)
            forged = vol.tree.files["pub"]._replace(index=99)  # pub's extent under another entry
            with pytest.raises(FamfsError, match="not the ones the validator admitted"):
                require_admitted(val, forged)
        log.release()


def test_a_log_full_of_refusals_keeps_the_stats_xattr_small(tmp_path: Path) -> None:
    import json

    from daxmode.famfs.mount.namespace import SUMMARY_ERRORS

    with map_image(write_base(tmp_path / "v.img")) as m:
        log = log_of(m.buf)
        for k in range(300):  # 300 files over the secret
            i = BASE_ENTRIES + k
            log[L.LOG_HDR_SIZE + i * L.ENTRY_SIZE : L.LOG_HDR_SIZE + (i + 1) * L.ENTRY_SIZE] = (
                L.pack_file_entry(i, f"over{k}", 2 * MiB, [(0, 14 * MiB, 2 * MiB)])
            )
        import struct

        struct.pack_into("<QQ", log, L.LOG_HDR_COUNTERS_OFF, BASE_ENTRIES + 300, BASE_ENTRIES + 300)
        ns = Namespace(Volume(m, ME).sb, log, device_size=m.size)
        s = ns.summary()
        assert s["errors_total"] == 300 and len(s["errors"]) == len(s["refused"]) == SUMMARY_ERRORS  # type: ignore[arg-type]
        dev = Device(memoryview(m.buf), m.sync, m.size)
        assert len(FamfsFuse(ns, COPY, device=dev).stats_json()) < 64 << 10
        assert json.loads(FamfsFuse(ns, COPY, device=dev).stats_json())["namespace"]["errors_total"] == 300
        ns.detach_log()
        dev.buf.release()
        log.release()
