"""Playing a log into a famfs-v1 mount (daxmode/famfs/mount/v1.py), with the ioctl at the edge
recorded instead of sent: order, modes and owners, refusals before any ioctl, idempotence, and a
refused map leaving no file.  The kernel side runs in the guest (tests/vm/guest/test_famfs_v1.py)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from daxmode.errors import FamfsError
from daxmode.famfs import Volume
from daxmode.famfs.media import layout as L
from daxmode.famfs.mount import v1
from daxmode.famfs.mount import v1abi as A
from daxmode.fsdev import Mapping

MiB = 1 << 20


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, A.V1Map]]:
    calls: list[tuple[str, A.V1Map]] = []

    def record(fd: int, m: A.V1Map) -> None:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), m))

    monkeypatch.setattr(v1, "ioctl_map_create", record)
    return calls


def _volume_bytes(medium: Mapping, vol: Volume) -> tuple[L.Superblock, bytearray]:
    sb = L.unpack_superblock(medium.buf[: L.SB_SIZE])
    return sb, v1._volume_bytes(
        bytes(medium.buf[: L.SB_SIZE]), bytes(medium.buf[L.LOG_OFFSET : L.LOG_OFFSET + sb.log_len])
    )


def test_play_creates_in_log_order_with_modes_and_owners(
    vol: Volume, medium: Mapping, tmp_path: Path, sent: list
) -> None:
    vol.mkdir("d", mode=0o750, uid=7, gid=8)
    a, _ = vol.creat("d/a", 3 * MiB, mode=0o640, uid=9, gid=10)
    il, _ = vol.creat("d/il", 3 * MiB, nstrips=2, chunk=2 * MiB, nbuckets=2, min_bucket=2 * MiB)
    vol.creat("d/wide", 7 * MiB, nstrips=2, chunk=2 * MiB, nbuckets=2, min_bucket=2 * MiB)
    sb, buf = _volume_bytes(medium, vol)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rep = v1.play_into(str(mnt), buf, sb, medium.size)
    assert rep.created_dirs == ["d"] and rep.created_files == ["d/a", "d/il"]
    assert len(rep.refused) == 1 and "'d/wide'" in rep.refused[0] and "4 extents" in rep.refused[0]
    assert rep.errors == []
    # one MAP_CREATE per played file, with the log's map; none for the refused one
    assert [(p, m) for p, m in sent] == [
        (str(mnt / "d/a"), A.V1Map(A.FILE_REG, 3 * MiB, ((a.extents[0][1], a.extents[0][2]),))),
        (str(mnt / "d/il"), A.plan_file(il)),
    ]
    assert len(sent[1][1].extents) in (1, 2)
    assert not (mnt / "d/wide").exists()
    s = os.stat(mnt / "d")
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) == (0o750, 7, 8)
    s = os.stat(mnt / "d/a")
    assert (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) == (0o640, 9, 10)
    # a second pass creates nothing and sends nothing
    again = v1.play_into(str(mnt), buf, sb, medium.size)
    assert again.created_files == [] and again.created_dirs == [] and again.present == 3
    assert len(sent) == 2 and len(again.refused) == 1


def test_a_refused_map_leaves_no_file(
    vol: Volume, medium: Mapping, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol.creat("f", MiB)

    def refuse(fd: int, m: A.V1Map) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(v1, "ioctl_map_create", refuse)
    sb, buf = _volume_bytes(medium, vol)
    rep = v1.play_into(str(tmp_path), buf, sb, medium.size)
    assert rep.created_files == [] and rep.errors == ["f: Invalid argument"]
    assert not (tmp_path / "f").exists()


def test_the_extent_validator_refuses_before_any_ioctl(
    vol: Volume, medium: Mapping, tmp_path: Path, sent: list
) -> None:
    """Issue 16's crafted file: an interleaved 0644 file whose 4 MiB chunk is larger than its 2 MiB
    strips would read past each strip into another file.  As a v1 map it unrolls to two 4 MiB
    extents, which the v1 ABI would take; the validator refuses it, so no ioctl is made for it,
    and the file before it (whose bytes it would expose) is mapped as usual."""
    secret, _ = vol.creat("secret", 2 * MiB, mode=0o600, uid=1000, gid=1000)
    off = secret.extents[0][1]
    strips = [(0, off - 2 * MiB, 2 * MiB), (0, off + 2 * MiB, 2 * MiB)]
    vol._append(lambda seq: L.pack_interleaved_entry(seq, "evil", 4 * MiB, 4 * MiB, strips, mode=0o644))
    sb, buf = _volume_bytes(medium, vol)
    from daxmode.famfs.media.log import scan_log

    evil = scan_log(memoryview(buf)[L.LOG_OFFSET :], sb.log_len).records[-1]
    assert isinstance(A.plan_file(evil), A.V1Map)  # the v1 ABI alone would have sent it
    rep = v1.play_into(str(tmp_path), buf, sb, medium.size)
    assert rep.created_files == ["secret"] and rep.errors == []
    assert len(rep.refused) == 1 and "'evil'" in rep.refused[0], rep.refused
    assert [p for p, _m in sent] == [str(tmp_path / "secret")]
    assert not (tmp_path / "evil").exists()


def test_a_bad_log_header_refuses_the_volume(vol: Volume, medium: Mapping) -> None:
    _sb, buf = _volume_bytes(medium, vol)
    buf[L.LOG_OFFSET : L.LOG_OFFSET + 8] = b"\0" * 8  # the log magic
    with pytest.raises(FamfsError, match="fails fsck"):
        v1._checked(buf, medium.size, "img")


def test_existing_path_of_the_wrong_kind_is_an_error(
    vol: Volume, medium: Mapping, tmp_path: Path, sent: list
) -> None:
    vol.mkdir("x")
    (tmp_path / "x").write_text("not a directory")
    sb, buf = _volume_bytes(medium, vol)
    rep = v1.play_into(str(tmp_path), buf, sb, medium.size)
    assert rep.errors == ["x: exists in the mount but is not a directory"] and sent == []
