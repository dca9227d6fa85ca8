"""``daxmode famfs identity``: show this host's famfs identity, take a volume's back after the file
was lost, and mkfs saying when it mints one (issue 21)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from click.testing import CliRunner

from daxmode.cli import main
from daxmode.famfs.media.identity import SYSTEM_UUID_PATH, read_system_uuid
from daxmode.fsdev import create_image
from daxmode.sysfs import Sysfs

MiB = 1 << 20


def famfs(root: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--root", str(root), "famfs", *args])
    return r.exit_code, r.stdout, r.stderr


def _volume(tmp_path: Path) -> tuple[Path, Path, uuid.UUID]:
    root = tmp_path / "root"
    root.mkdir()
    img = tmp_path / "v.img"
    create_image(img, 64 * MiB)
    code, _, err = famfs(root, "mkfs", str(img))
    assert code == 0
    me = read_system_uuid(Sysfs(str(root)))
    assert me is not None
    assert f"created /{SYSTEM_UUID_PATH} ({me})" in err  # mkfs says it minted an identity
    return root, img, me


def test_show(tmp_path: Path) -> None:
    root, _, me = _volume(tmp_path)
    code, out, _ = famfs(root, "identity")
    assert code == 0 and out == f"famfs identity {me} (/opt/famfs/system_uuid)\n"
    assert json.loads(famfs(root, "identity", "--json")[1])["system_uuid"] == str(me)
    os.unlink(root / SYSTEM_UUID_PATH)
    code, out, _ = famfs(root, "identity", "--json")
    assert code == 0 and json.loads(out)["system_uuid"] is None


def test_mkfs_says_nothing_with_an_identity(tmp_path: Path) -> None:
    root, img, _ = _volume(tmp_path)
    code, _, err = famfs(root, "mkfs", "--force", str(img), "--json")
    assert code == 0 and "identity" not in err


def test_adopt_after_the_file_was_lost(tmp_path: Path) -> None:
    root, img, me = _volume(tmp_path)
    os.unlink(root / SYSTEM_UUID_PATH)
    code, out, _ = famfs(root, "identity", "--adopt", str(img))
    assert code == 0 and out == f"famfs identity {me}: this host is now the master of {img}\n"
    assert read_system_uuid(Sysfs(str(root))) == me
    assert oct(os.stat(root / SYSTEM_UUID_PATH).st_mode & 0o777) == "0o444"
    assert (root / SYSTEM_UUID_PATH).read_bytes() == str(me).encode() + b"\0"  # famfs's format
    code, out, _ = famfs(root, "identity", "--adopt", str(img))
    assert code == 0 and "already the master" in out
    # master again: writes are allowed
    src = tmp_path / "f"
    src.write_bytes(b"x" * 100)
    assert famfs(root, "cp", str(img), str(src), "/f")[0] == 0


def test_adopt_refuses_a_different_identity_unless_forced(tmp_path: Path) -> None:
    root, img, me = _volume(tmp_path)
    other = uuid.uuid4()
    p = root / SYSTEM_UUID_PATH
    os.chmod(p, 0o644)
    p.write_bytes(str(other).encode() + b"\0")
    code, _, err = famfs(root, "identity", "--adopt", str(img))
    assert code == 12 and err.count("\n") == 1 and f"identity is {other}" in err and "--force" in err
    assert read_system_uuid(Sysfs(str(root))) == other  # untouched
    code, out, _ = famfs(root, "identity", "--adopt", str(img), "--force", "--json")
    assert code == 0 and json.loads(out) == {
        "file": "/opt/famfs/system_uuid",
        "system_uuid": str(me),
        "previous": str(other),
        "changed": True,
    }
    assert read_system_uuid(Sysfs(str(root))) == me


def test_adopt_refuses_garbage(tmp_path: Path) -> None:
    root, img, _ = _volume(tmp_path)
    p = root / SYSTEM_UUID_PATH
    os.chmod(p, 0o644)
    p.write_bytes(b"not a uuid")
    code, _, err = famfs(root, "identity", "--adopt", str(img))
    assert code == 12 and "holds no UUID" in err
    bad = tmp_path / "bad.img"
    create_image(bad, 64 * MiB)  # zeros: no superblock
    os.unlink(p)
    code, _, err = famfs(root, "identity", "--adopt", str(bad))
    assert code == 12 and "ts_magic" in err and not p.exists()
    code, _, err = famfs(root, "identity", "--force")
    assert code == 2 and "--adopt" in err
