"""The famfs-kernel helpers: context adaptation (qemu/patch_adapt.py) and the INIT probe's parsing
(qemu/fuse_init_probe.py), on text only.  The famfs kernel's declared skips (qemu/skips/famfs-v10.toml)
are the harness's; tests/harness/test_harness_verdict.py covers them.

The real use -- the famfs V10 series on Debian's 7.3, booted -- is `make famfs-kernel-test`.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    """A qemu/ script loaded as a module (they run with the host's python3, outside any package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "qemu" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


probe = _script("fuse_init_probe")
pa = _script("patch_adapt")

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


# ---- the INIT probe ---------------------------------------------------------------------------


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
    from mhd.guest import facts

    rel = "6.12.117-daxmode"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/fs/famfs/famfs.ko:\n")
    assert facts.has_famfsv1(rel, str(tmp_path))
    (tree / "modules.dep").write_text("kernel/fs/fuse/fuse.ko:\n")
    assert not facts.has_famfsv1(rel, str(tmp_path))


def test_facts_tell_a_kernel_without_fsdev(tmp_path):
    from mhd.guest import facts

    rel = "6.12.117-daxmode"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/drivers/dax/device_dax.ko:\n")
    assert not facts.has_fsdev(rel, {"CONFIG_DEV_DAX": "m"}, str(tmp_path))
    assert facts.has_fsdev(rel, {"CONFIG_DEV_DAX_FSDEV": "m"}, str(tmp_path))
    (tree / "modules.dep").write_text("kernel/drivers/dax/fsdev_dax.ko.xz: kernel/drivers/dax/dax.ko.xz\n")
    assert facts.has_fsdev(rel, None, str(tmp_path))
