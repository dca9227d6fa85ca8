"""``daxmode apply`` on the simulator: idempotent, dry-run touches nothing, failures are per device."""

from __future__ import annotations

import errno
import json

import pytest
from click.testing import CliRunner
from opsworld import NS_UUID, write_conf

from daxmode.cli import main
from daxmode.errors import UnknownDevice
from daxmode.modes import Progress
from daxmode.ops import apply as applymod
from daxmode.ops.config import ConfigError

RULES = """\
[[device]]
match = { namespace = "namespace0.0" }
mode = "fsdev"

[[device]]
match = { cxl_region = "region1", name = "dax1.1" }
mode = "devdax"
"""


def test_apply_changes_then_is_idempotent(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    first = {r.device: r for r in applymod.apply(sysfs)}
    assert {n: r.status for n, r in first.items()} == {
        "dax0.0": "changed",
        "dax1.0": "no-rule",
        "dax1.1": "changed",
    }
    assert first["dax0.0"].rule == "/etc/daxmode.d/50.toml:1"
    assert (first["dax0.0"].start, first["dax0.0"].target) == ("devdax", "fsdev")
    assert s.driver("dax0.0") == "fsdev_dax" and s.driver("dax1.1") == "device_dax"
    assert s.driver("dax1.0") == "kmem"  # no rule: untouched
    s.clear_log()
    second = applymod.apply(sysfs)
    assert [r.status for r in second] == ["unchanged", "no-rule", "unchanged"]
    assert s.log() == []  # not a single write the second time
    assert applymod.exit_code(second) == 0


def test_dry_run_touches_nothing(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    s.clear_log()
    res = applymod.apply(sysfs, dry_run=True)
    assert [r.status for r in res] == ["would-change", "no-rule", "would-change"]
    assert any("fsdev_dax/new_id" in line for line in res[0].plan)
    assert s.log() == []
    assert s.driver("dax0.0") == "device_dax" and s.driver("dax1.1") is None


def test_named_devices_only_and_dev_paths(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    res = applymod.apply(sysfs, ["/dev/dax1.1"])
    assert [(r.device, r.status) for r in res] == [("dax1.1", "changed")]
    assert s.driver("dax0.0") == "device_dax"
    with pytest.raises(UnknownDevice, match=r"no dax device .dax7.0. \(existing: dax0.0, dax1.0, dax1.1\)"):
        applymod.apply(sysfs, ["dax7.0"])


def test_one_failure_does_not_stop_the_others_and_sets_the_exit_code(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    s.fail_write("sys/bus/dax/drivers/fsdev_dax/new_id", errno.EIO)
    res = {r.device: r for r in applymod.apply(sysfs)}
    assert res["dax0.0"].status == "failed"
    assert res["dax0.0"].exit_code == 9, res["dax0.0"].message  # rolled back
    assert "rolled back" in res["dax0.0"].message
    assert s.driver("dax0.0") == "device_dax"
    assert res["dax1.1"].status == "changed"
    assert applymod.exit_code(list(res.values())) == 9


def test_system_ram_rule_with_options(world):
    s, sysfs = world
    write_conf(
        sysfs,
        "50.toml",
        '[[device]]\nmatch = { name = "dax0.0" }\nmode = "system-ram"\nonline = false\n',
    )
    (r,) = applymod.apply(sysfs, ["dax0.0"])
    assert r.status == "changed"
    assert s.driver("dax0.0") == "kmem"
    assert set(s.block_states("dax0.0").values()) == {"offline"}
    (r,) = applymod.apply(sysfs, ["dax0.0"])
    assert r.status == "unchanged"


def test_leaving_system_ram_needs_force_in_the_rule(world):
    s, sysfs = world
    s.sysfs().write("sys/devices/system/memory/auto_online_blocks", "offline")
    write_conf(sysfs, "50.toml", '[[device]]\nmatch = { name = "dax1.0" }\nmode = "devdax"\n')
    # dax1.0 starts in kmem with its blocks offline: no force needed
    (r,) = applymod.apply(sysfs, ["dax1.0"])
    assert r.status == "changed", r.message
    assert s.driver("dax1.0") == "device_dax"


def test_conflict_fails_that_device_only(world):
    s, sysfs = world
    write_conf(sysfs, "10.toml", '[[device]]\nmatch = { region = 0 }\nmode = "fsdev"\n')
    write_conf(sysfs, "20.toml", '[[device]]\nmatch = { size = "1026M" }\nmode = "system-ram"\n')
    write_conf(sysfs, "30.toml", '[[device]]\nmatch = { name = "dax1.1" }\nmode = "devdax"\n')
    res = {r.device: r for r in applymod.apply(sysfs)}
    assert res["dax0.0"].status == "failed" and res["dax0.0"].exit_code == 11
    assert "/etc/daxmode.d/10.toml:1" in res["dax0.0"].message and "20.toml:1" in res["dax0.0"].message
    assert s.driver("dax0.0") == "device_dax"
    assert res["dax1.1"].status == "changed"


def test_seed_devices_are_skipped(world):
    _, sysfs = world
    from opsworld import REGION1

    sysfs.write(f"{REGION1}/create", "1")
    write_conf(sysfs, "10.toml", '[[device]]\nmatch = { name = "dax1.*" }\nmode = "devdax"\n')
    res = {r.device: r for r in applymod.apply(sysfs)}
    assert res["dax1.2"].status == "skipped"


def test_daxctl_conf_carries_over(world):
    s, sysfs = world
    write_conf(
        sysfs,
        "dax.conf",
        f"[reconfigure-device legacy]\nnvdimm.uuid = {NS_UUID}\nmode = famfs\n",
        d="etc/daxctl.conf.d",
    )
    (r,) = applymod.apply(sysfs, ["dax0.0"])
    assert (r.status, r.rule, r.target) == ("changed", "/etc/daxctl.conf.d/dax.conf:1", "fsdev")
    assert s.driver("dax0.0") == "fsdev_dax"


def test_bad_config_aborts_before_any_change(world):
    s, sysfs = world
    write_conf(sysfs, "10.toml", RULES)
    write_conf(sysfs, "20.toml", '[[device]]\nmatch = { name = "dax1.0" }\nmode = "sytem-ram"\n')
    s.clear_log()
    with pytest.raises(ConfigError, match=r"^/etc/daxmode.d/20.toml:3: unknown mode 'sytem-ram'"):
        applymod.apply(sysfs)
    assert s.log() == []


# --- CLI ----------------------------------------------------------------------------------------------


def cli(sysfs, *args: str):
    return CliRunner().invoke(main, ["--root", str(sysfs.root), "--sim", *args])


def test_cli_table_json_udev_and_exit_codes(world):
    _, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    r = cli(sysfs, "apply", "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["DEVICE", "RULE", "FROM", "TO", "RESULT"]
    assert lines[1].split() == ["dax0.0", "/etc/daxmode.d/50.toml:1", "devdax", "fsdev", "would-change"]
    r = cli(sysfs, "apply", "--json")
    data = json.loads(r.output)
    assert [d["status"] for d in data] == ["changed", "no-rule", "changed"]
    assert (data[0]["from"], data[0]["to"]) == ("devdax", "fsdev")  # the keys of set --json
    r = cli(sysfs, "apply", "--udev", "dax0.0")
    assert r.exit_code == 0
    assert r.output.rstrip().endswith(
        "daxmode apply dax0.0: unchanged (/etc/daxmode.d/50.toml:1: fsdev -> fsdev): already fsdev"
    )
    write_conf(sysfs, "50.toml", '[[device]]\nmatch = { name = "dax0.0" }\nmode = "ram-disk"\n')
    r = cli(sysfs, "apply")
    assert r.exit_code == 11
    assert r.stderr.strip() == (
        "daxmode: /etc/daxmode.d/50.toml:3: unknown mode 'ram-disk': "
        "use devdax, fsdev (or famfs), or system-ram"
    )
    write_conf(sysfs, "50.toml", RULES)
    r = cli(sysfs, "apply", "dax9.9")
    assert r.exit_code == 3


def test_cli_failure_is_reported_on_stderr_with_its_code(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULES)
    s.fail_write("sys/bus/dax/drivers/fsdev_dax/new_id", errno.EIO)
    r = cli(sysfs, "apply")
    assert r.exit_code == 9
    assert "daxmode: dax0.0: " in r.stderr and "rolled back" in r.stderr


def test_progress_reports_each_block_onlined_and_offlined(world):
    _, sysfs = world
    write_conf(sysfs, "50.toml", '[[device]]\nmatch = { name = "dax0.0" }\nmode = "system-ram"\n')
    calls: list[tuple[str, str, int, int]] = []

    def record(ev: Progress) -> None:
        calls.append((ev.device, ev.what, ev.done, ev.total))

    (r,) = applymod.apply(sysfs, ["dax0.0"], progress=record)
    assert r.status == "changed"
    assert calls == [("dax0.0", "onlining", i, 8) for i in range(1, 9)]
    write_conf(sysfs, "50.toml", '[[device]]\nmatch = { name = "dax0.0" }\nmode = "devdax"\nforce = true\n')
    calls.clear()
    (r,) = applymod.apply(sysfs, ["dax0.0"], progress=record)
    assert r.status == "changed", r.message
    assert calls == [("dax0.0", "offlining", i, 8) for i in range(1, 9)]
