"""qemu/kconfig_report.py: which requested kernel options did not survive olddefconfig, and why."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("kconfig_report", ROOT / "qemu" / "kconfig_report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["kconfig_report"] = module
    spec.loader.exec_module(module)
    return module


kr = _load()


def test_parse_config_reads_values_and_not_set_lines():
    text = """
# Automatically generated file; DO NOT EDIT.
CONFIG_DAX=y
CONFIG_DEV_DAX=m
CONFIG_LOCALVERSION="-daxmode"
# CONFIG_DRM is not set
# a comment that merely mentions CONFIG_FOO=y
CONFIG_NR_CPUS=64
"""
    assert kr.parse_config(text) == {
        "DAX": "y",
        "DEV_DAX": "m",
        "LOCALVERSION": '"-daxmode"',
        "DRM": "n",
        "NR_CPUS": "64",
    }


def test_merge_fragments_later_wins_including_turning_off():
    base = "CONFIG_DEV_DAX=m\nCONFIG_DRM=y\nCONFIG_FS_DAX=y\n"
    extra = "CONFIG_DEV_DAX=y\n# CONFIG_DRM is not set\n"
    assert kr.merge_fragments([base, extra]) == {"DEV_DAX": "y", "DRM": "n", "FS_DAX": "y"}


def test_parse_kconfig_symbols_finds_config_and_menuconfig_only():
    text = """
menuconfig DEV_DAX
\ttristate "Device DAX"
\tdepends on TRANSPARENT_HUGEPAGE
if DEV_DAX
config DEV_DAX_FSDEV
\ttristate
\tdefault DEV_DAX
\tselect CONFIG_LIKE_WORD
endif
# config COMMENTED_OUT
"""
    assert kr.parse_kconfig_symbols(text) == {"DEV_DAX", "DEV_DAX_FSDEV"}


def test_known_symbols_walks_every_kconfig_file(tmp_path):
    (tmp_path / "drivers/dax").mkdir(parents=True)
    (tmp_path / "drivers/dax/Kconfig").write_text("config DEV_DAX\n\ttristate\n")
    (tmp_path / "arch/x86").mkdir(parents=True)
    (tmp_path / "arch/x86/Kconfig.cpu").write_text("config X86_FEATURE\n\tbool\n")
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs/README").write_text("config NOT_A_KCONFIG_FILE\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/Kconfig").write_text("config HIDDEN_IN_GIT\n")
    assert kr.known_symbols(tmp_path) == {"DEV_DAX", "X86_FEATURE"}


def test_compare_reports_unknown_and_dropped_options_but_not_honoured_ones():
    requested = {
        "DEV_DAX": "m",  # honoured
        "FUSE_FAMFS_DAX": "y",  # the tree lacks it
        "DEV_DAX_FSDEV": "m",  # known, dropped by a dependency
        "CXL_PORT": "m",  # known, forced to y by its default
        "DRM": "n",  # off as asked
        "WIRELESS_GONE": "n",  # off and unknown: nothing to report
    }
    final = {"DEV_DAX": "m", "CXL_PORT": "y"}
    known = {"DEV_DAX", "DEV_DAX_FSDEV", "CXL_PORT", "DRM"}
    findings = kr.compare(requested, final, known)
    assert [(f.symbol, f.requested, f.actual, f.known) for f in findings] == [
        ("FUSE_FAMFS_DAX", "y", "n", False),
        ("CXL_PORT", "m", "y", True),
        ("DEV_DAX_FSDEV", "m", "n", True),
    ]
    text = kr.report(findings)
    assert "this tree lacks FUSE_FAMFS_DAX (requested =y" in text
    assert "CXL_PORT: requested =m, got =y" in text
    assert "DEV_DAX_FSDEV: requested =m, got not set" in text


def test_compare_reports_an_option_that_could_not_be_turned_off():
    findings = kr.compare({"DRM": "n"}, {"DRM": "y"}, {"DRM"})
    assert [f.describe() for f in findings] == [
        "DRM: requested not set, got =y (forced by a dependency, select or hidden default)"
    ]


def test_nothing_to_report_gives_empty_text():
    assert kr.report(kr.compare({"A": "y"}, {"A": "y"}, {"A"})) == ""


def test_cli_on_a_fake_tree(tmp_path, capsys):
    (tmp_path / "tree/drivers/dax").mkdir(parents=True)
    (tmp_path / "tree/drivers/dax/Kconfig").write_text("config DEV_DAX\nconfig DEV_DAX_KMEM\n")
    (tmp_path / "final.config").write_text("CONFIG_DEV_DAX=m\n# CONFIG_DEV_DAX_KMEM is not set\n")
    (tmp_path / "famfs.config").write_text(
        "CONFIG_DEV_DAX=m\nCONFIG_DEV_DAX_KMEM=m\nCONFIG_FUSE_FAMFS_DAX=y\n"
    )
    (tmp_path / "extra.config").write_text("CONFIG_DEV_DAX_KMEM=y\n")
    rc = kr.main(
        [
            "--tree",
            str(tmp_path / "tree"),
            "--config",
            str(tmp_path / "final.config"),
            str(tmp_path / "famfs.config"),
            str(tmp_path / "extra.config"),
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.splitlines() == [
        "this tree lacks FUSE_FAMFS_DAX (requested =y; no Kconfig defines it)",
        "DEV_DAX_KMEM: requested =y, got not set (unmet dependency or hidden symbol)",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "CONFIG_CXL_REGION=y",
        "CONFIG_CXL_REGION_INVALIDATION_TEST=y",
        "CONFIG_DEV_DAX=m",
        "CONFIG_DEV_DAX_FSDEV=m",
        "CONFIG_DEV_DAX_KMEM=m",
        "CONFIG_DEV_DAX_CXL=m",
        "CONFIG_FS_DAX=y",
        "CONFIG_FUSE_FAMFS_DAX=y",
        "CONFIG_MHP_DEFAULT_ONLINE_TYPE_OFFLINE=y",
        "CONFIG_9P_FS=y",
        "CONFIG_VIRTIO_CONSOLE=y",
    ],
)
def test_shipped_fragment_asks_for_what_the_stack_needs(line):
    fragment = kr.parse_config((ROOT / "qemu" / "famfs.config").read_text())
    symbol, value = line.removeprefix("CONFIG_").split("=")
    assert fragment[symbol] == value
