"""daxmode famfs verbs that famfs also has mean what famfs's mean (issue 17): umask on creat/cp -m,
cp -r, several sources going on past a failure, striping on cp, "bytes allocated" as famfs counts."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from daxmode.cli import famfs as cli_famfs
from daxmode.cli import main
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.copy import read_out
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.media.volume import Volume
from daxmode.fsdev import create_image, map_image

MiB = 1 << 20


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    img = tmp_path / "f.img"
    create_image(img, 512 * MiB)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(os.urandom(3 * MiB + 5))
    (src / "sub" / "b").write_bytes(b"bee" * 100)
    os.chmod(src / "a", 0o600)
    old = os.umask(0o027)
    try:
        assert famfs(root, "mkfs", str(img))[0] == 0
        yield root, img, src
    finally:
        os.umask(old)


def famfs(root: Path, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--root", str(root), "famfs", *args])
    return r.exit_code, r.stdout, r.stderr


def files(img: Path) -> dict[str, L.FileMeta]:
    with map_image(img, writable=False) as m:
        v = Volume(m, None)
        try:
            return dict(v.tree.files)
        finally:
            v.close()


def test_umask_applies_to_creat_and_cp_modes_not_mkdir(env: tuple[Path, Path, Path]) -> None:
    root, img, src = env
    assert famfs(root, "creat", str(img), "c", "-s", "4096", "-m", "0666")[0] == 0
    assert famfs(root, "creat", str(img), "d", "-s", "4096")[0] == 0
    assert famfs(root, "cp", str(img), str(src / "a"), "e", "-m", "0777")[0] == 0
    assert famfs(root, "cp", str(img), str(src / "a"), "f")[0] == 0  # no -m: the source's mode
    assert famfs(root, "mkdir", str(img), "dir", "-m", "0777")[0] == 0
    fs = files(img)
    assert {k: fs[k].mode for k in "cdef"} == {"c": 0o640, "d": 0o640, "e": 0o750, "f": 0o600}
    with map_image(img, writable=False) as m:
        v = Volume(m, None)
        assert v.tree.dirs["dir"].mode == 0o777
        v.close()


def test_cp_goes_on_past_a_failed_source(env: tuple[Path, Path, Path]) -> None:
    root, img, src = env
    assert famfs(root, "mkdir", str(img), "d")[0] == 0
    rc, out, err = famfs(
        root, "cp", str(img), str(src / "a"), "/nonexistent", str(src / "sub"), str(src / "sub/b"), "d"
    )
    assert rc == 12
    assert set(files(img)) == {"d/a", "d/b"}
    lines = err.splitlines()
    assert len(lines) == 3 and all(x.startswith("daxmode: ") for x in lines)
    assert "/nonexistent" in lines[0] and "use -r" in lines[1] and "2 files copied, 2 failed" in lines[2]
    assert out == ""  # the copies that worked are named in the summary count; nothing on stdout


def test_cp_recursive_puts_contents_into_dest(env: tuple[Path, Path, Path]) -> None:
    root, img, src = env
    rc, _out, err = famfs(root, "cp", "-r", str(img), str(src), "top")
    assert rc == 0, err
    fs = files(img)
    assert set(fs) == {"top/a", "top/sub/b"}
    out = io.BytesIO()
    with map_image(img, writable=False) as m:
        v = Volume(m, None)
        read_out(v, "top/sub/b", out)
        v.close()
    assert out.getvalue() == b"bee" * 100


def test_cp_stripes(env: tuple[Path, Path, Path]) -> None:
    root, img, src = env
    rc, _o, err = famfs(
        root, "cp", "-N", "2", "-B", "4", "-C", "2M", "--small-buckets", str(img), str(src / "a"), "s"
    )
    assert rc == 0, err
    m = files(img)["s"]
    assert m.interleaved and m.nstrips == 2 and m.chunk_size == 2 * MiB
    with map_image(img, writable=False) as mm:
        assert not fsck(mm.buf, mm.size).problems


def test_fsck_counts_bytes_allocated_as_famfs(env: tuple[Path, Path, Path]) -> None:
    """famfs's fsck counts the superblock and the log in "Allocated bytes" (its bitmap reserves them)."""
    root, img, _src = env
    assert famfs(root, "creat", str(img), "x", "-s", "5M")[0] == 0
    with map_image(img, writable=False) as m:
        rep = fsck(m.buf, m.size)
    assert rep.stats["allocated_bytes"] == 2 * MiB + 8 * MiB + 6 * MiB
    rc, out, _ = famfs(root, "fsck", str(img))
    assert rc == 0 and f"{16 * MiB} bytes allocated" in out


def test_copy_bar_draws_only_for_large_files(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(cli_famfs.sys, "stderr", buf)
    bar = cli_famfs._CopyBar()
    bar("small", 10, 100)
    assert buf.getvalue() == ""
    bar("big", 32 * MiB, 128 * MiB)
    bar("big", 128 * MiB, 128 * MiB)
    bar.end()
    text = buf.getvalue()
    assert "big:  25% 32/128 MiB" in text and "big: 100% 128/128 MiB" in text and text.endswith("\n")
