"""qemu/build-kernel.sh on bad input and on the patch step, with a tiny fake kernel tree.

The full build is exercised by `make kernel-test`; here everything stops before compiling
(STOP_AFTER=patch) or fails earlier, so these run in seconds.
"""

from __future__ import annotations

import os
import re
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


# ---- mailboxes as list archives serve them, and context adaptations (ADAPT=) ------------------


def _quoted_printable_crlf(patch: str) -> str:
    """A patch mail the way the famfs V10 mails are archived: CRLF line ends, quoted-printable
    with the CR and LF themselves encoded (=0D=0A) and soft line breaks every 72 characters."""
    head, _, body = patch.partition("\n\n")
    special = {"\r": "=0D", "\n": "=0A", "=": "=3D", "\t": "=09"}
    flat = "".join(special.get(c, c) for c in body.replace("\n", "\r\n"))
    lines, line = [], ""
    for token in re.findall(r"=[0-9A-F]{2}|.", flat):
        if len(line) + len(token) > 72:
            lines.append(line + "=")
            line = ""
        line += token
    lines.append(line)
    return (
        head + "\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n" + "\n".join(lines) + "\n"
    )


def test_quoted_printable_crlf_mail_applies(tmp_path, ktree):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(_quoted_printable_crlf(GOOD_PATCH))
    assert "=0D" in mbox.read_text()
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "patched line\nline 7\n" in (Path(r.stdout.strip()) / "src/drivers/dax/fsdev.c").read_text()


# The tree moved on: "line 5" was reworded, so GOOD_PATCH's leading context is stale there.
NEWER_FSDEV_C = FSDEV_C.replace("line 5\n", "line 5, reworded\n")
ADAPT_STALE = """# GOOD_PATCH on a tree where line 5 was reworded
patch: dax: add a line
file: drivers/dax/fsdev.c
hunk: @@ -4,6 +4,7 @@
 line 4
 line 5, reworded
 line 6
=
 line 7
 line 8
 line 9
"""


def _adapt_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "adapt"
    d.mkdir(exist_ok=True)
    (d / "0001-stale.adapt").write_text(text)
    return d


def test_adaptation_reseats_a_hunk_with_stale_context(tmp_path, ktree):
    (ktree / "drivers/dax/fsdev.c").write_text(NEWER_FSDEV_C)
    mbox = tmp_path / "series.mbox"
    mbox.write_text(_quoted_printable_crlf(GOOD_PATCH))
    plain = run(f"KSRC={ktree}", f"PATCHES={mbox}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert plain.returncode == 21 and "does not apply" in plain.stderr and "ADAPT=" in plain.stderr
    d = _adapt_dir(tmp_path, ADAPT_STALE)
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", f"ADAPT={d}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    text = (Path(r.stdout.strip()) / "src/drivers/dax/fsdev.c").read_text()
    assert text == NEWER_FSDEV_C.replace("line 6\n", "line 6\npatched line\n")
    assert "adapted 'dax: add a line' drivers/dax/fsdev.c @@ -4,6 +4,7 @@" in r.stderr
    assert "adapted hunks: 1 from 1 file(s)" in r.stderr


def test_adaptation_that_matches_no_hunk_stops_the_build(tmp_path, ktree):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(GOOD_PATCH)
    d = _adapt_dir(tmp_path, ADAPT_STALE.replace("patch: dax: add a line", "patch: dax: another patch"))
    cache = tmp_path / "c"
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", f"ADAPT={d}", "STOP_AFTER=patch", cache=cache)
    assert r.returncode == 21
    assert "matched no hunk" in r.stderr
    assert leftovers(cache) == []


def test_adaptation_with_the_wrong_number_of_runs_is_refused(tmp_path, ktree):
    (ktree / "drivers/dax/fsdev.c").write_text(NEWER_FSDEV_C)
    mbox = tmp_path / "series.mbox"
    mbox.write_text(GOOD_PATCH)
    d = _adapt_dir(tmp_path, ADAPT_STALE.replace("=\n", "=\n line 6b\n=\n"))
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", f"ADAPT={d}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 21
    assert "2 '=' line(s) but hunk" in r.stderr


def test_follow_up_patch_in_adapt_dir_applies_after_the_series(tmp_path, ktree):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(GOOD_PATCH)
    d = tmp_path / "adapt"
    d.mkdir()
    # Its context includes the series' line, so it only applies after the series.
    (d / "post-1-fix.patch").write_text(
        "Subject: [PATCH] our fix on top\n\n---\n"
        "--- a/drivers/dax/fsdev.c\n+++ b/drivers/dax/fsdev.c\n"
        "@@ -6,3 +6,3 @@\n line 6\n-patched line\n+patched line, fixed\n line 7\n"
    )
    r = run(f"KSRC={ktree}", f"PATCHES={mbox}", f"ADAPT={d}", "STOP_AFTER=patch", cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "patched line, fixed\nline 7" in (Path(r.stdout.strip()) / "src/drivers/dax/fsdev.c").read_text()
    assert "applied follow-up post-1-fix.patch" in r.stderr


def test_adapt_needs_patches(tmp_path, ktree):
    d = _adapt_dir(tmp_path, ADAPT_STALE)
    r = run(f"KSRC={ktree}", f"ADAPT={d}", cache=tmp_path / "c")
    assert r.returncode == 2
    assert "no PATCHES=" in r.stderr
