"""qemu/build-kernel.sh on bad input and on the patch step, with a tiny fake kernel tree.

The full build is exercised by `make kernel-test`; here everything stops before compiling
(STOP_AFTER=patch) or fails earlier, so these run in seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "qemu" / "build-kernel.sh"

FSDEV_C = "".join(f"line {i}\n" for i in range(1, 11))

GOOD_PATCH = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Test <test@example.com>
Subject: [PATCH] dax: add a line

---
 drivers/dax/fsdev.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/drivers/dax/fsdev.c b/drivers/dax/fsdev.c
--- a/drivers/dax/fsdev.c
+++ b/drivers/dax/fsdev.c
@@ -4,6 +4,7 @@
 line 4
 line 5
 line 6
+patched line
 line 7
 line 8
 line 9
--
2.39.5

"""

BAD_PATCH = GOOD_PATCH.replace(
    "Subject: [PATCH] dax: add a line", "Subject: [PATCH] dax: stale context"
).replace(" line 5\n", " line five\n")


def _mbox(*patches: str) -> str:
    return "".join(patches)


@pytest.fixture
def ktree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    (tree / "arch/x86").mkdir(parents=True)
    (tree / "drivers/dax").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\nNAME = Test\n")
    (tree / "Kconfig").write_text("mainmenu test\n")
    (tree / "arch/x86/Kconfig").write_text("config X86\n\tdef_bool y\n")
    (tree / "drivers/dax/fsdev.c").write_text(FSDEV_C)
    return tree


def run(*args: str, env: dict[str, str] | None = None, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), f"CACHE={cache}", "MIN_FREE_GB=0", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def leftovers(cache: Path) -> list[str]:
    """What a failed run left in the cache besides locks, logs and an empty by-input index."""
    kb = cache / "kbuild"
    if not kb.exists():
        return []
    names = [p.name for p in kb.iterdir() if p.name not in ("locks", "logs", "by-input")]
    names += [f"by-input/{p.name}" for p in (kb / "by-input").glob("*")]
    return sorted(names)


def test_ksrc_required(tmp_path):
    r = run(cache=tmp_path / "c")
    assert r.returncode == 2
    assert "KSRC is required" in r.stderr


def test_not_a_kernel_tree(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/Makefile").write_text("all:\n\techo hi\n")
    r = run(f"KSRC={tmp_path / 'src'}", cache=tmp_path / "c")
    assert r.returncode == 20
    assert "is not a Linux kernel tree" in r.stderr
    assert r.stderr.count("\n") == 1
    assert r.stdout == ""


def test_missing_ksrc_directory(tmp_path):
    r = run(f"KSRC={tmp_path / 'nope'}", cache=tmp_path / "c")
    assert r.returncode == 20
    assert "is not a directory" in r.stderr


def test_unknown_argument(tmp_path, ktree):
    r = run(f"KSRC={ktree}", "--frobnicate", cache=tmp_path / "c")
    assert r.returncode == 2
    assert "unknown argument '--frobnicate'" in r.stderr


def test_good_patch_applies_to_the_copy_and_leaves_the_tree_alone(tmp_path, ktree):
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-add.patch").write_text(GOOD_PATCH)
    cache = tmp_path / "c"
    r = run(f"KSRC={ktree}", f"PATCHES={patches}", "STOP_AFTER=patch", cache=cache)
    assert r.returncode == 0, r.stderr
    scratch = Path(r.stdout.strip())
    assert scratch.parent == cache / "kbuild"
    patched = (scratch / "src/drivers/dax/fsdev.c").read_text()
    assert "patched line\nline 7" in patched
    assert (ktree / "drivers/dax/fsdev.c").read_text() == FSDEV_C
    assert "applied 1 patch(es)" in r.stderr


def test_mbox_with_several_patches_applies_each(tmp_path, ktree):
    second = GOOD_PATCH.replace("Subject: [PATCH] dax: add a line", "Subject: [PATCH] dax: another").replace(
        "@@ -4,6 +4,7 @@\n line 4\n line 5\n line 6\n+patched line\n line 7\n line 8\n line 9\n",
        "@@ -1,3 +1,4 @@\n+first line\n line 1\n line 2\n line 3\n",
    )
    mbox = tmp_path / "series.mbox"
    mbox.write_text(_mbox(GOOD_PATCH, second))
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    text = (Path(r.stdout.strip()) / "src/drivers/dax/fsdev.c").read_text()
    assert text.startswith("first line\nline 1\n")
    assert "patched line" in text
    assert "applied 2 patch(es)" in r.stderr


def test_failing_patch_is_named_and_nothing_is_left(tmp_path, ktree):
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-add.patch").write_text(GOOD_PATCH)
    (patches / "0002-stale.patch").write_text(BAD_PATCH)
    cache = tmp_path / "c"
    # STOP_AFTER=patch: the patch step fails the same way, and no compiler is needed for it.
    r = run(f"KSRC={ktree}", f"PATCHES={patches}", "STOP_AFTER=patch", cache=cache)
    assert r.returncode == 21
    assert "0002-stale.patch does not apply" in r.stderr
    assert leftovers(cache) == []
    assert (ktree / "drivers/dax/fsdev.c").read_text() == FSDEV_C


def test_failing_message_in_mbox_is_named_by_subject(tmp_path, ktree):
    mbox = tmp_path / "series.mbx"
    mbox.write_text(_mbox(GOOD_PATCH, BAD_PATCH))
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 21
    assert "patch 'dax: stale context' (message 0002 of" in r.stderr


def test_patch_dir_without_patches(tmp_path, ktree):
    (tmp_path / "empty").mkdir()
    r = run(f"KSRC={ktree}", f"PATCHES={tmp_path / 'empty'}", cache=tmp_path / "c")
    assert r.returncode == 21
    assert "holds no *.patch" in r.stderr


def test_not_enough_disk_space(tmp_path, ktree):
    r = subprocess.run(
        ["bash", str(SCRIPT), f"KSRC={ktree}", f"CACHE={tmp_path / 'c'}", "MIN_FREE_GB=99999999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode == 22:
        pytest.skip("kernel build dependencies are not installed here; the disk check comes after them")
    assert r.returncode == 23
    assert "GB free" in r.stderr
    assert leftovers(tmp_path / "c") == []


def test_missing_build_tool_prints_the_install_line(tmp_path, ktree):
    # A PATH that has everything from /usr/bin and /bin except flex.
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name != "flex" and not (fakebin / name).exists():
                (fakebin / name).symlink_to(Path(d, name))
    env = {**os.environ, "PATH": str(fakebin)}
    r = run(f"KSRC={ktree}", cache=tmp_path / "c", env=env)
    assert r.returncode == 22
    assert "apt-get install -y" in r.stderr
    assert " flex" in r.stderr
