"""Configuration parsing (daxmode.d TOML, daxctl.conf.d ini) and rule matching."""

from __future__ import annotations

import pytest
from opsworld import CXL_UUID, DAX_UUID, NS_UUID, write_conf

from daxmode.kernel.devices import DeviceFacts, device_facts
from daxmode.modes import Mode
from daxmode.ops import config
from daxmode.ops.config import ConfigError, Conflict, Match, parse_daxctl, parse_toml, resolve

SRC = "/etc/daxmode.d/t.toml"


def err(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_toml(text, SRC)
    assert e.value.exit_code == 11
    return str(e.value)


# --- TOML: good files -------------------------------------------------------------------------------


def test_parse_all_forms_and_options():
    text = """\
# comment
[[device]]
match = { name = "dax0.0" }
mode = "famfs"

[[device]]
match.cxl_region = "region1"
match.size = "512M"
mode = "system-ram"
online = false
movable = false
force = true

[[device]]
mode = "devdax"
[device.match]
namespace = "7D4F0E2A-1C3B-4E5F-8A9B-0C1D2E3F4A5B"
region = "region0"
"""
    a, b, c = parse_toml(text, SRC)
    assert (a.mode, a.match.name, a.line, a.where) == (Mode.FSDEV, "dax0.0", 2, f"{SRC}:2")
    assert a.online and a.movable and not a.force
    assert b.match == Match(cxl_region="region1", size=512 << 20)
    assert (b.mode, b.online, b.movable, b.force, b.line) == (Mode.SYSTEM_RAM, False, False, True, 6)
    assert c.match == Match(namespace=DAX_UUID, region=0)
    assert c.line == 14


def test_empty_file_has_no_rules():
    assert parse_toml("# nothing yet\n", SRC) == []


# --- TOML: bad files name file and line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[device]]\nmatch = { name = "dax0.0" \nmode = "fsdev"\n', f"{SRC}:2: TOML syntax: "),
        ('[[device]]\nmatch = { name = "dax0.0" }\nmode = "ramdisk"\n', f"{SRC}:3: unknown mode 'ramdisk'"),
        ('[[device]]\nmatch = { name = "dax0.0" }\n', f"{SRC}:1: [[device]] needs mode"),
        ('[[device]]\nmode = "fsdev"\n', f"{SRC}:1: [[device]] needs a non-empty match table"),
        ('[[device]]\nmatch = {}\nmode = "fsdev"\n', f"{SRC}:2: [[device]] needs a non-empty match table"),
        (
            '[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\n\n[[device]]\n'
            'match = { nmae = "dax1.0" }\nmode = "devdax"\n',
            f"{SRC}:6: unknown match key 'nmae'",
        ),
        (
            '[[device]]\nname = "dax0.0"\nmode = "fsdev"\n',
            f"{SRC}:2: unknown key 'name' in [[device]] (match keys",
        ),
        ('[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\nonline = true\n', f"{SRC}:4: online only"),
        (
            '[[device]]\nmatch = { name = "dax0.0" }\nmode = "system-ram"\nonline = "yes"\n',
            f"{SRC}:4: online must",
        ),
        ('[[device]]\nmatch = { name = "sda" }\nmode = "fsdev"\n', f"{SRC}:2: match.name must be"),
        ('[[device]]\nmatch = { region = "r1" }\nmode = "fsdev"\n', f"{SRC}:2: match.region must be"),
        ('[[device]]\nmatch = { size = "12Q" }\nmode = "fsdev"\n', f"{SRC}:2: match.size: bad size"),
        ('[[device]]\nmatch = { namespace = "ns0" }\nmode = "fsdev"\n', f"{SRC}:2: match.namespace must be"),
        ('[[device]]\nmatch = { cxl_region = 3 }\nmode = "fsdev"\n', f"{SRC}:2: match.cxl_region must be"),
        ('[[device]]\nmatch = { name = "dax0.0" }\nmode = 3\n', f"{SRC}:3: mode must be a string"),
        ('mode = "fsdev"\n', f"{SRC}:1: unknown top-level key 'mode'"),
        ("device = 3\n", f"{SRC}:1: 'device' must be an array of tables"),
    ],
)
def test_bad_toml_names_file_and_line(text: str, expected: str):
    assert err(text).startswith(expected)


def test_load_reads_files_in_order_and_reports_the_bad_one(world):
    _, sysfs = world
    write_conf(sysfs, "20-b.toml", '[[device]]\nmatch = { name = "dax1.1" }\nmode = "devdax"\n')
    write_conf(sysfs, "10-a.toml", '[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\n')
    write_conf(sysfs, "README", "not toml, ignored (no .toml suffix)")
    cfg = config.load(sysfs)
    assert [e.where for e in cfg.entries] == ["/etc/daxmode.d/10-a.toml:1", "/etc/daxmode.d/20-b.toml:1"]
    write_conf(sysfs, "30-c.toml", "[[device]\n")
    with pytest.raises(ConfigError, match=r"^/etc/daxmode.d/30-c.toml:1: TOML syntax"):
        config.load(sysfs)


def test_non_utf8_file(world):
    _, sysfs = world
    p = write_conf(sysfs, "x.toml", "")
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"^/etc/daxmode.d/x.toml: not UTF-8"):
        config.load(sysfs)


def test_parse_size():
    assert config.parse_size("4G") == 4 << 30
    assert config.parse_size("512MiB") == 512 << 20
    assert config.parse_size("0x200000") == 2 << 20
    assert config.parse_size(4096) == 4096
    for bad in ("", "1.5G", "-1", "G", True):
        with pytest.raises(config.InvalidArgument):
            config.parse_size(bad)  # type: ignore[arg-type]


# --- daxctl.conf.d ------------------------------------------------------------------------------------


def test_daxctl_section_parsed_like_daxctl():
    text = f"""\
# daxctl example
[reconfigure-device foo]
nvdimm.uuid = {DAX_UUID}
mode = system-ram   ; comment
online = Yes
movable = "false"
[something-else bar]
nvdimm.uuid = {NS_UUID}
mode = devdax
"""
    (e,) = parse_daxctl([("/etc/daxctl.conf.d/a.conf", text)])
    assert (e.mode, e.online, e.movable, e.origin) == (Mode.SYSTEM_RAM, True, False, "daxctl")
    assert e.match == Match(namespace=DAX_UUID)
    assert e.where == "/etc/daxctl.conf.d/a.conf:2"


def test_daxctl_famfs_alias_and_defaults():
    (e,) = parse_daxctl([("a.conf", f"[reconfigure-device x]\nnvdimm.uuid={DAX_UUID}\nmode=famfs\n")])
    assert (e.mode, e.online, e.movable) == (Mode.FSDEV, True, True)


def test_daxctl_files_last_to_first_and_booleans_from_the_last_file():
    a = f"[reconfigure-device one]\nnvdimm.uuid = {DAX_UUID}\nmode = system-ram\nonline = false\n"
    b = f"[reconfigure-device two]\nnvdimm.uuid = {DAX_UUID}\nonline = true\nmovable = no\n"
    (e,) = parse_daxctl([("10.conf", a), ("20.conf", b)])
    # daxctl joins "true false" (20.conf first); the first character decides: online
    assert (e.mode, e.online, e.movable) == (Mode.SYSTEM_RAM, True, False)
    assert e.where == "20.conf:1"


def test_daxctl_mode_in_two_files_is_what_daxctl_rejects():
    a = f"[reconfigure-device one]\nnvdimm.uuid = {DAX_UUID}\nmode = devdax\n"
    b = f"[reconfigure-device two]\nnvdimm.uuid = {DAX_UUID}\nmode = system-ram\n"
    with pytest.raises(ConfigError) as e:
        parse_daxctl([("10.conf", a), ("20.conf", b)])
    assert str(e.value) == (
        f"20.conf:3: mode for nvdimm.uuid {DAX_UUID} is set in several files (20.conf:3, 10.conf:3); "
        "daxctl reads 'system-ram devdax'"
    )


def test_daxctl_first_matching_section_in_a_file_wins():
    text = (
        f"[reconfigure-device one]\nnvdimm.uuid = {DAX_UUID}\nmode = devdax\n"
        f"[reconfigure-device two]\nnvdimm.uuid = {DAX_UUID}\nmode = system-ram\n"
    )
    (e,) = parse_daxctl([("a.conf", text)])
    assert e.mode is Mode.DEVDAX


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[reconfigure-device x]\nnvdimm.uuid = 1234\nmode = devdax\n",
            "a.conf:1: nvdimm.uuid '1234' is not a uuid",
        ),
        (
            f"[reconfigure-device x]\nnvdimm.uuid = {DAX_UUID}\nonline = true\n",
            "a.conf:1: section for nvdimm.uuid",
        ),
        (f"[reconfigure-device x]\nnvdimm.uuid = {DAX_UUID}\nmode = dax\n", "a.conf:3: unknown mode 'dax'"),
        (
            f"[reconfigure-device x]\nnvdimm.uuid = {DAX_UUID}\nmode = devdax\nonline = maybe\n",
            "a.conf:4: online must",
        ),
        ("[reconfigure-device x]\nthis line is junk\n", "a.conf:2: syntax error"),
    ],
)
def test_daxctl_bad_files(text: str, expected: str):
    with pytest.raises(ConfigError) as e:
        parse_daxctl([("a.conf", text)])
    assert str(e.value).startswith(expected)


def test_daxctl_sections_without_uuid_or_other_names_are_ignored():
    text = "[reconfigure-device x]\nmode = devdax\n[monitor]\nlog = /tmp/x\n"
    assert parse_daxctl([("a.conf", text)]) == []


# --- matching and precedence ------------------------------------------------------------------------


def test_facts_from_topology(world):
    _, sysfs = world
    f0 = device_facts(sysfs, "dax0.0")
    assert (f0.name, f0.region_id, f0.namespace, f0.namespace_uuid, f0.nvdimm_uuid) == (
        "dax0.0",
        0,
        "namespace0.0",
        NS_UUID,
        DAX_UUID,
    )
    assert f0.cxl_region is None
    f1 = device_facts(sysfs, "dax1.1")
    assert (f1.cxl_region, f1.cxl_region_uuid, f1.namespace, f1.size) == (
        "region1",
        CXL_UUID,
        None,
        128 << 20,
    )


FACTS = DeviceFacts(
    "dax0.0", 0, "x", 1 << 30, "namespace0.0", NS_UUID, DAX_UUID, cxl_region=None, cxl_region_uuid=None
)


@pytest.mark.parametrize(
    ("match", "hit"),
    [
        (Match(name="dax0.0"), True),
        (Match(name="dax0.*"), True),
        (Match(name="dax1.*"), False),
        (Match(region=0), True),
        (Match(region=1), False),
        (Match(namespace="namespace0.0"), True),
        (Match(namespace=NS_UUID), True),
        (Match(namespace=DAX_UUID), True),
        (Match(namespace="namespace1.0"), False),
        (Match(cxl_region="region0"), False),
        (Match(size=1 << 30), True),
        (Match(size=2 << 30), False),
        (Match(name="dax0.0", size=2 << 30), False),
    ],
)
def test_match(match: Match, hit: bool):
    assert match.matches(FACTS) is hit


def _cfg(text: str, daxctl: str = "") -> config.Config:
    c = config.Config(entries=parse_toml(text, SRC))
    if daxctl:
        c.daxctl = parse_daxctl([("d.conf", daxctl)])
    return c


def test_exact_name_beats_more_keys():
    c = _cfg(
        '[[device]]\nmatch = { region = 0, size = "1G", namespace = "namespace0.0" }\nmode = "devdax"\n'
        '[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\n'
    )
    assert resolve(c, FACTS).mode is Mode.FSDEV


def test_more_keys_beat_fewer_and_globs():
    c = _cfg(
        '[[device]]\nmatch = { name = "dax*" }\nmode = "system-ram"\n'
        '[[device]]\nmatch = { region = 0, size = "1G" }\nmode = "fsdev"\n'
        '[[device]]\nmatch = { region = 0 }\nmode = "devdax"\n'
    )
    assert resolve(c, FACTS).line == 4


def test_tie_with_different_settings_is_a_conflict_naming_both():
    c = _cfg(
        '[[device]]\nmatch = { region = 0 }\nmode = "devdax"\n'
        '[[device]]\nmatch = { size = "1G" }\nmode = "fsdev"\n'
    )
    with pytest.raises(Conflict) as e:
        resolve(c, FACTS)
    assert str(e.value) == (
        f"dax0.0: conflicting rules {SRC}:1 (mode devdax) and {SRC}:4 (mode fsdev); make one more specific"
    )
    assert e.value.exit_code == 11


def test_tie_with_same_settings_is_fine():
    c = _cfg(
        '[[device]]\nmatch = { region = 0 }\nmode = "fsdev"\n'
        '[[device]]\nmatch = { size = "1G" }\nmode = "fsdev"\n'
    )
    assert resolve(c, FACTS).line == 1


def test_daxctl_rules_only_when_no_daxmode_rule_matches():
    dctl = f"[reconfigure-device x]\nnvdimm.uuid = {DAX_UUID}\nmode = system-ram\n"
    assert (
        resolve(_cfg('[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\n', dctl), FACTS).mode
        is Mode.FSDEV
    )
    got = resolve(_cfg('[[device]]\nmatch = { name = "dax9.9" }\nmode = "fsdev"\n', dctl), FACTS)
    assert (got.mode, got.origin) == (Mode.SYSTEM_RAM, "daxctl")
    assert resolve(_cfg(""), FACTS) is None
