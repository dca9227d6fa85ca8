"""Image paths root is given: only a regular file named by its own path (issue 16).

``famfs mkfs PATH`` used to follow a symlinked PATH and format its target.  Every command that
opens a user-given image (mkfs, fsck, cp, ls, mount) goes through one check (fsdev.open_image):
a symlink as the last component or on the way is refused with exit 13, anything but a regular file
with exit 11, and the file the symlink points at is never opened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from daxmode.cli import main
from daxmode.fsdev import create_image

MiB = 1 << 20


def run(root: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--root", str(root), "famfs", *args])
    return r.exit_code, r.stdout, r.stderr


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(root, a formatted image, a victim file the attacker would like root to format)."""
    root = tmp_path / "root"
    root.mkdir()
    img = tmp_path / "f.img"
    create_image(img, 64 * MiB)
    rc, _out, err = run(root, "mkfs", str(img))
    assert rc == 0, err
    victim = tmp_path / "victim.img"
    create_image(victim, 64 * MiB)
    return root, img, victim


def one_line(err: str, code: int, rc: int, what: str) -> None:
    assert rc == code, (rc, err)
    assert err.startswith("daxmode: ") and err.count("\n") == 1 and what in err, err


COMMANDS = [
    ("mkfs",), ("mkfs", "--force"), ("fsck",), ("ls",), ("cp", "SRC", "x"), ("creat", "y", "-s", "4K")
]  # fmt: skip
World = tuple[Path, Path, Path]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_symlinked_image_is_refused(world: World, tmp_path: Path, cmd: tuple[str, ...]) -> None:
    root, img, victim = world
    src = tmp_path / "src.bin"
    src.write_bytes(b"data" * 1000)
    args = [str(src) if a == "SRC" else a for a in cmd[1:]]
    before = {p: digest(p) for p in (img, victim)}
    link = tmp_path / "link.img"
    link.symlink_to(victim)
    rc, _out, err = run(root, cmd[0], str(link), *args)
    one_line(err, 13, rc, f"{link} is a symlink (to {victim}); name the image file itself")
    # a directory on the way that is a symlink: the same refusal, naming the real path
    (tmp_path / "real").mkdir()
    os.rename(victim, tmp_path / "real/victim.img")
    (tmp_path / "via").symlink_to(tmp_path / "real")
    rc, _out, err = run(root, cmd[0], str(tmp_path / "via/victim.img"), *args)
    one_line(err, 13, rc, f"is reached through a symlink (it is {tmp_path}/real/victim.img)")
    os.rename(tmp_path / "real/victim.img", victim)
    assert {p: digest(p) for p in (img, victim)} == before, "root wrote through a symlink"


def test_only_regular_files_are_images(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, _img, _victim = world
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: it must not even be opened
    rc, _out, err = run(root, "mkfs", str(fifo))
    one_line(err, 11, rc, f"{fifo} is not a regular file: an image must be one")
    rc, _out, err = run(root, "fsck", "/dev/null")
    one_line(err, 11, rc, "/dev/null is not a regular file")
    rc, _out, err = run(root, "mkfs", str(tmp_path))
    one_line(err, 11, rc, "is not a regular file")
    rc, _out, err = run(root, "fsck", str(tmp_path / "missing.img"))
    one_line(err, 11, rc, "neither a dax device (daxX.Y) nor an image file")


def test_the_image_itself_still_works(world: tuple[Path, Path, Path]) -> None:
    root, img, _victim = world
    rc, out, err = run(root, "fsck", str(img))
    assert rc == 0 and "superblock: famfs v" in out, err
