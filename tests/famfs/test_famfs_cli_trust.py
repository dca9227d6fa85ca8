"""The famfs CLI a script can trust: existing names, hostile names, split exit codes, mkfs of a
volume in use, and creat -r."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_famfs_cli_fsdev import run

from daxmode.cli import main
from daxmode.errors import EXIT_CODES
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.copy import seeded_bytes
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.famfs.media.names import escape
from daxmode.famfs.mount import records as S
from daxmode.fsdev import create_image, map_image
from daxmode.sysfs import Sysfs

MiB = 1 << 20


@pytest.fixture
def vol(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    p = tmp_path / "f.img"
    create_image(p, 64 * MiB)
    assert run(root, "mkfs", str(p))[0] == 0
    return root, p


def test_cp_onto_an_existing_name_needs_overwrite(vol: tuple[Path, Path], tmp_path: Path) -> None:
    root, p = vol
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A" * 5000)
    b.write_bytes(b"B" * 5000)
    assert run(root, "cp", str(p), str(a), "f")[0] == 0
    rc, _out, err = run(root, "cp", str(p), str(b), "f")
    assert rc == 15 and "exists in famfs; use --overwrite" in err and err.count("\n") == 1
    assert run(root, "cat", str(p), "f")[1] == "A" * 5000  # untouched
    assert run(root, "cp", str(p), "--overwrite", str(b), "f")[0] == 0
    assert run(root, "cat", str(p), "f")[1] == "B" * 5000
    b.write_bytes(b"B" * 6000)  # famfs files never change size, --overwrite or not
    rc, _out, err = run(root, "cp", str(p), "--overwrite", str(b), "f")
    assert rc == 15 and "never change size" in err
    assert run(root, "mkdir", str(p), "d")[0] == 0
    rc, _out, err = run(root, "cp", str(p), str(a), "d/")
    assert rc == 0
    assert run(root, "cp", str(p), str(a), "d/")[0] == 15


@pytest.mark.parametrize("name", ["nl\nname", "esc\x1b]0;owned\x07", "tab\tx", "del\x7f", "c1\x9b2J"])
def test_new_names_with_control_characters_are_refused(
    vol: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    root, p = vol
    rc, _out, err = run(root, "creat", str(p), name, "-s", "4096")
    assert rc == 11 and "control character" in err and err.count("\n") == 1
    assert "\x1b" not in err and "\x07" not in err
    assert run(root, "mkdir", str(p), name)[0] == 11
    src = tmp_path / "s"
    src.write_bytes(b"x")
    assert run(root, "cp", str(p), str(src), name)[0] == 11


def test_listings_escape_names_already_on_the_media(vol: tuple[Path, Path]) -> None:
    root, p = vol
    hostile = "evil\nfake-file\x1b[2J"
    with map_image(p) as m:
        log = memoryview(m.buf)[L.LOG_OFFSET : L.LOG_OFFSET + L.DEFAULT_LOG_LEN]
        e = L.pack_file_entry(0, "x", 4096, [(0, 10 * MiB, 2 * MiB)])
        raw = bytearray(e)
        raw[L.FILE_OFF + 24 : L.FILE_OFF + 24 + 80] = hostile.encode().ljust(80, b"\0")
        import struct
        import zlib

        struct.pack_into("<Q", raw, L.ENTRY_CRC_OFF, zlib.crc32(raw[: L.ENTRY_CRC_OFF]))
        log[L.LOG_HDR_SIZE : L.LOG_HDR_SIZE + L.ENTRY_SIZE] = bytes(raw)
        struct.pack_into("<QQ", log, L.LOG_HDR_COUNTERS_OFF, 1, 1)
        log.release()
    for args in (("ls", str(p)), ("ls", "-l", str(p)), ("fsck", str(p)), ("logplay", str(p))):
        _rc, out, _err = run(root, *args)
        assert "\x1b" not in out and "fake-file\n" not in out, (args, out)
    assert run(root, "ls", str(p))[1] == escape(hostile) + "\n" == "evil\\x0afake-file\\x1b[2J\n"
    assert json.loads(run(root, "ls", "--json", str(p))[1])[0]["path"] == hostile  # JSON escapes itself
    _rc, out, _err = run(root, "fsck", str(p))
    assert "control characters" in out


def test_exit_codes_are_split_and_documented(vol: tuple[Path, Path], tmp_path: Path) -> None:
    root, p = vol
    assert run(root, "creat", str(p), "big", "-s", str(1 << 30))[0] == 14  # no space
    assert run(root, "creat", str(p), "f", "-s", "4096")[0] == 0
    assert run(root, "creat", str(p), "f", "-s", "8192")[0] == 15  # exists (another size)
    assert run(root, "mkdir", str(p), "f")[0] == 15
    assert run(root, "cat", str(p), "nothere")[0] == 16  # not found
    assert run(root, "creat", str(p), "nodir/x", "-s", "4096")[0] == 16
    assert run(root, "ls", str(p), "nodir")[0] == 16
    other = tmp_path / "other"
    other.mkdir()
    assert run(other, "creat", str(p), "g", "-s", "4096")[0] == 17  # another system UUID: a client
    with map_image(p) as m:  # corrupt metadata: 12
        m.buf[L.LOG_OFFSET : L.LOG_OFFSET + 8] = bytes(8)
    assert run(root, "fsck", str(p))[0] == 12
    for code in (12, 14, 15, 16, 17):
        assert code in EXIT_CODES
    table = (Path(__file__).resolve().parents[2] / "docs" / "modes.md").read_text()
    for code in (12, 14, 15, 16, 17):
        assert f"\n| {code} |" in table, code


def test_creat_random_writes_its_data_before_the_entry(vol: tuple[Path, Path]) -> None:
    root, p = vol
    rc, out, _err = run(root, "creat", str(p), "r", "-s", str(3 * MiB + 5), "-r", "-S", "42", "--json")
    assert rc == 0 and json.loads(out)["seed"] == 42
    r = CliRunner().invoke(main, ["--root", str(root), "famfs", "cat", str(p), "r"])
    assert r.stdout_bytes == seeded_bytes(3 * MiB + 5, 42)
    assert run(root, "creat", str(p), "s", "-s", "4096", "-S", "1")[0] == 2  # --seed needs -r


def test_mkfs_refuses_a_volume_in_use_even_with_force(vol: tuple[Path, Path], tmp_path: Path) -> None:
    """A daxmode mount record naming the image (its server may have died mounted) is enough; the
    mountinfo side is exercised with real mounts in tests/fuse/test_mount_host.py."""
    root, p = vol
    sysfs = Sysfs(root)
    ensure_system_uuid(sysfs)
    rec = S.MountRecord(str(tmp_path / "mnt"), str(p), None, "copy", "fuse.famfs", pid=1, pid_start=0)
    S.save(sysfs, rec)
    rc, _out, err = run(root, "mkfs", "--force", str(p))
    assert rc == 7 and "is mounted at" in err and "--force does not override" in err
    assert run(root, "mkfs", "--force", "--kill", str(p))[0] == 7
    S.remove(sysfs, rec.mountpoint)
    assert run(root, "mkfs", "--force", str(p))[0] == 0
