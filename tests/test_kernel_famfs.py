"""The famfs-kernel helpers: context adaptation (qemu/patch_adapt.py), the skip policy
(qemu/skip_policy.py) and the INIT probe's parsing (qemu/fuse_init_probe.py), on text only.

The real use -- the famfs V10 series on Debian's 7.3, booted -- is `make famfs-kernel-test`.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qemu"))

import fuse_init_probe as probe  # noqa: E402
import patch_adapt as pa  # noqa: E402
import skip_policy as sp  # noqa: E402

SERIES_DIFF = """--- a/f.c
+++ b/f.c
@@ -10,7 +10,8 @@ int f(void)
     a();
     b();
     c();
-    old();
+    new();
+    newer();
     d();
     e();
     f();
@@ -30,3 +31,4 @@ int g(void)
     x();
+    y();
     z();
     w();
"""

ADAPT = """# f.c was edited around the first hunk
patch: subsys: change f
file: f.c
hunk: @@ -10,7 +10,8 @@
     a();
     b2();
     c();
=
     d();
     e2();
"""


def test_splice_keeps_the_series_lines_and_replaces_context_only():
    records = pa.parse_adapt(ADAPT, "t.adapt")
    out, used = pa.adapt_diff(SERIES_DIFF, "subsys: change f", records)
    assert [r.hunk.path for r in used] == ["f.c"]
    lines = out.split("\n")
    first = lines.index("@@ -10,6 +10,7 @@ int f(void)")
    assert lines[first + 1 : first + 9] == [
        "     a();",
        "     b2();",
        "     c();",
        "-    old();",
        "+    new();",
        "+    newer();",
        "     d();",
        "     e2();",
    ]
    # the second hunk is untouched
    assert "@@ -30,3 +31,4 @@ int g(void)\n     x();\n+    y();\n     z();\n     w();" in out
    changed = [x for x in out.split("\n") if x.startswith(("+", "-")) and not x.startswith(("+++", "---"))]
    assert changed == ["-    old();", "+    new();", "+    newer();", "+    y();"]


def test_other_subject_is_left_alone():
    records = pa.parse_adapt(ADAPT, "t.adapt")
    out, used = pa.adapt_diff(SERIES_DIFF, "subsys: another patch", records)
    assert used == []
    assert out == SERIES_DIFF


def test_wrong_number_of_runs_is_an_error():
    records = pa.parse_adapt(ADAPT.replace("=\n", "=\n     q();\n=\n"), "t.adapt")
    with pytest.raises(pa.AdaptError, match="2 '=' line"):
        pa.adapt_diff(SERIES_DIFF, "subsys: change f", records)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hunk: @@ -1,2 +1,3 @@\n x\n=\n", "needs a 'patch:' and a 'file:'"),
        ("patch: p\nfile: f\nhunk: @@ -1,2 +1,3 @@\n x\n y\n", "without a '=' line"),
        ("patch: p\nfile: f\nbogus: 1\n", "unknown key"),
        (" stray context\n", "outside a hunk record"),
        ("patch: p\nfile: f\nhunk: @@ nonsense @@\n", "not a hunk header"),
    ],
)
def test_bad_adaptation_files(text, message):
    with pytest.raises(pa.AdaptError, match=message):
        pa.parse_adapt(text, "bad.adapt")


def test_the_same_hunk_adapted_twice_is_refused(tmp_path):
    (tmp_path / "a.adapt").write_text(ADAPT)
    (tmp_path / "b.adapt").write_text(ADAPT)
    with pytest.raises(pa.AdaptError, match="already adapted"):
        pa.load([tmp_path / "a.adapt", tmp_path / "b.adapt"])


def test_cli_reports_unused_records(tmp_path, capsys):
    (tmp_path / "t.adapt").write_text(ADAPT)
    (tmp_path / "p.diff").write_text(SERIES_DIFF)
    log = tmp_path / "used"
    files = [str(tmp_path / "p.diff"), str(tmp_path / "t.adapt")]
    assert pa.main(["apply", "--subject", "other", "--used-log", str(log), *files]) == 0
    assert pa.main(["unused", "--used-log", str(log), files[1]]) == 1
    assert "matched no hunk of the series" in capsys.readouterr().err
    assert pa.main(["apply", "--subject", "subsys: change f", "--used-log", str(log), *files]) == 0
    assert pa.main(["unused", "--used-log", str(log), files[1]]) == 0


def test_shipped_famfs_7_3_adaptations_parse_and_say_why():
    d = ROOT / "qemu/patches/famfs-7.3"
    files = sorted(d.glob("*.adapt"))
    assert files, "qemu/patches/famfs-7.3 has no adaptations"
    records = pa.load(files)
    assert len(records) == 14
    for f in files:
        text = f.read_text()
        assert text.startswith("# Context adaptation of the famfs fuse series V10"), f.name
        # no -/+ line of the series in our files: every hunk body line is context or '='
        body = [
            ln for ln in text.splitlines() if ln and not ln.startswith(("#", "patch: ", "file: ", "hunk: "))
        ]
        assert all(ln.startswith(" ") or ln == "=" for ln in body), f.name
    for p in sorted(d.glob("*.patch")):
        head = p.read_text().split("\n---\n", 1)[0]
        assert "Ours, for the famfs fuse series V10 on Linux 7.3" in head and "Not a context change" in head


# ---- skip policy ------------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="0" skipped="2" tests="3">
<testcase classname="tests.vm.guest.test_modes" name="test_ok"/>
<testcase classname="tests.vm.guest.test_modes" name="test_online">
<skipped type="pytest.skip" message="needs DAXMODE_VM_ONLINE_OK=1 (onlines memory)">x.py:1</skipped>
</testcase>
<testcase classname="tests.vm.guest.test_famfs" name="test_mount">
<skipped type="pytest.skip" message="kernel 7.3.4-daxmode lacks fuse-famfs (CONFIG_FUSE_FAMFS_DAX)">
x.py:2</skipped></testcase>
</testsuite></testsuites>
"""


def test_skip_policy_fails_a_skip_the_kernel_does_not_justify(tmp_path, capsys):
    (tmp_path / "host0/share").mkdir(parents=True)
    (tmp_path / "host0/share/guest-junit.xml").write_text(JUNIT)
    rc = sp.main(
        ["--policy", str(ROOT / "qemu/famfs-kernel.skips"), "--kernel", "7.3.4-daxmode", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "skip ok (" in out and "test_online" in out
    assert "skip NOT justified on 7.3.4-daxmode: host0 tests.vm.guest.test_famfs::test_mount" in out
    assert "2 skip(s) in 1 result file(s), 1 not justified" in out


def test_skip_policy_passes_when_every_skip_is_justified(tmp_path):
    (tmp_path / "host-junit.xml").write_text(
        JUNIT.replace("lacks fuse-famfs", "x").replace(
            'message="kernel 7.3.4-daxmode x (CONFIG_FUSE_FAMFS_DAX)"', 'message="no daxctl"'
        )
    )
    assert sp.main(["--policy", str(ROOT / "qemu/famfs-kernel.skips"), str(tmp_path)]) == 0


def test_skip_policy_without_results_fails(tmp_path):
    assert sp.main(["--policy", str(ROOT / "qemu/famfs-kernel.skips"), str(tmp_path)]) == 1


def test_skip_policy_rules_need_a_reason():
    with pytest.raises(ValueError, match="without a comment"):
        sp.parse_policy("some pattern\n")
    rules = sp.parse_policy(
        "# why\n# more\nabc\ndef\n# other\nghi\n\njkl\n".replace("\njkl\n", "\n# j\njkl\n")
    )
    assert [(r.pattern.pattern, r.why) for r in rules] == [
        ("abc", "why more"),
        ("def", "why more"),
        ("ghi", "other"),
        ("jkl", "j"),
    ]
    with pytest.raises(ValueError, match="line 4: pattern without"):
        sp.parse_policy("# why\nabc\n\ndef\n")


def test_tools_skip_is_justified_but_not_when_the_kernel_is_also_blamed():
    rules = sp.parse_policy((ROOT / "qemu/famfs-kernel.skips").read_text())
    prefix = "famfs mount not possible here: "
    # the exact text of daxmode/famfs/bringup.py's reason, as seen in a famfs-kernel run
    tools = (
        "famfs's user-space tools are not installed (no `famfs` on PATH); build them from famfs's repository"
    )
    kernel = "the running kernel (7.3.4) has no famfs support: neither fuse-famfs nor famfs v1"
    assert any(r.pattern.search(prefix + tools) for r in rules)
    assert not any(r.pattern.search(prefix + kernel + "; " + tools) for r in rules)
    assert not any(r.pattern.search(prefix + tools + "; " + kernel) for r in rules)


# ---- INIT probe ---------------------------------------------------------------------------------


def _init_request(flags: int, flags2: int, opcode: int = probe.FUSE_INIT) -> bytes:
    body = struct.pack("<IIIII", 7, 45, 131072, flags, flags2) + bytes(44)
    return probe.IN_HEADER.pack(40 + len(body), opcode, 2, 0, 0, 0, 0, 0, 0) + body


def test_probe_reads_the_dax_fmap_bit_from_flags2():
    init = probe.parse_init(_init_request(probe.FUSE_INIT_EXT | 1, 1 << 11))
    assert (init["major"], init["minor"]) == (7, 45)
    assert probe.flags64(init["flags"], init["flags2"]) & probe.FUSE_DAX_FMAP
    # without FUSE_INIT_EXT, flags2 does not count
    init = probe.parse_init(_init_request(1, 1 << 11))
    assert not probe.flags64(init["flags"], init["flags2"]) & probe.FUSE_DAX_FMAP


def test_probe_refuses_a_request_that_is_not_init():
    with pytest.raises(ValueError, match="not FUSE_INIT"):
        probe.parse_init(_init_request(0, 0, opcode=1))
    with pytest.raises(ValueError, match="short request"):
        probe.parse_init(b"\0" * 20)


def test_shipped_famfs_v1_adaptations_parse_and_say_why():
    d = ROOT / "qemu/patches/famfs-v1-6.12"
    files = sorted(d.glob("*.adapt"))
    assert files, "qemu/patches/famfs-v1-6.12 has no adaptations"
    assert len(pa.load(files)) == 3
    for f in files:
        text = f.read_text()
        assert text.startswith("# Context adaptation of the standalone famfs series"), f.name
        body = [
            ln for ln in text.splitlines() if ln and not ln.startswith(("#", "patch: ", "file: ", "hunk: "))
        ]
        assert all(ln.startswith(" ") or ln == "=" for ln in body), f.name


def test_facts_know_the_rfc_v2_module_name(tmp_path):
    from mhd import facts

    rel = "6.12.117-daxmode"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/fs/famfs/famfs.ko:\n")
    assert facts.has_famfsv1(rel, str(tmp_path))
    (tree / "modules.dep").write_text("kernel/fs/fuse/fuse.ko:\n")
    assert not facts.has_famfsv1(rel, str(tmp_path))


def test_facts_tell_a_kernel_without_fsdev(tmp_path):
    from mhd import facts

    rel = "6.12.117-daxmode"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/drivers/dax/device_dax.ko:\n")
    assert not facts.has_fsdev(rel, {"CONFIG_DEV_DAX": "m"}, str(tmp_path))
    assert facts.has_fsdev(rel, {"CONFIG_DEV_DAX_FSDEV": "m"}, str(tmp_path))
    (tree / "modules.dep").write_text("kernel/drivers/dax/fsdev_dax.ko.xz: kernel/drivers/dax/dax.ko.xz\n")
    assert facts.has_fsdev(rel, None, str(tmp_path))
