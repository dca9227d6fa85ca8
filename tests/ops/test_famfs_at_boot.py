"""A famfs volume mounted at boot: ``mount = "..."`` in /etc/daxmode.d, ``apply`` starting
``daxmode-famfs@DEV.service``, and ``famfs up DEV`` taking the mount point from the rule."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner
from opsworld import write_conf

from daxmode.cli import main
from daxmode.ops import apply as applymod
from daxmode.ops.config import ConfigError, load

RULE = """\
[[device]]
match = { namespace = "namespace0.0" }
mode = "fsdev"
mount = "/mnt/famfs"
"""


def test_mount_key(world):
    _, sysfs = world
    write_conf(sysfs, "50.toml", RULE)
    (entry,) = load(sysfs).entries
    assert entry.mount == "/mnt/famfs" and entry.to_json()["mount"] == "/mnt/famfs"
    bad = {
        'mode = "system-ram"\nmount = "/mnt/x"': "only applies to mode fsdev",
        'mode = "fsdev"\nmount = "mnt/x"': "absolute path",
        'mode = "fsdev"\nmount = "/mnt/a b"': "no spaces",
        'mode = "fsdev"\nmount = "/mnt/../etc"': "absolute path",
        'mode = "fsdev"\nmount = 3': "absolute path",
    }
    for body, why in bad.items():
        write_conf(sysfs, "50.toml", f'[[device]]\nmatch = {{ name = "dax0.0" }}\n{body}\n')
        with pytest.raises(ConfigError, match=why) as e:
            load(sysfs)
        assert str(e.value).startswith("/etc/daxmode.d/50.toml:")


def test_apply_without_systemd_says_how(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULE)
    (plan,) = applymod.apply(sysfs, ["dax0.0"], dry_run=True)
    assert plan.plan[-1].startswith("start daxmode-famfs@dax0.0.service")
    (res,) = applymod.apply(sysfs, ["dax0.0"])
    assert s.driver("dax0.0") == "fsdev_dax"
    assert res.status == "changed" and "no systemd here (run daxmode famfs up dax0.0)" in res.message


def test_apply_starts_the_unit_and_a_live_mount_meets_the_rule(world, tmp_path, monkeypatch):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULE)
    s.p("run/systemd/system").mkdir(parents=True)  # sd_booted()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (res,) = applymod.apply(sysfs, ["dax0.0"])
    assert "started daxmode-famfs@dax0.0.service" in res.message
    assert calls.read_text() == "start --no-block daxmode-famfs@dax0.0.service\n"
    # the mount (copy data path: devdax while mounted) meets the rule: nothing to do, nothing started
    s.add_mount("/dev/dax0.0", "/mnt/famfs", "fuse.famfs")
    (res,) = applymod.apply(sysfs, ["dax0.0"])
    assert (res.status, res.message) == ("unchanged", "famfs mounted at /mnt/famfs")
    assert calls.read_text().count("start") == 1


def test_up_takes_the_mount_point_from_the_rule(world):
    s, sysfs = world
    write_conf(sysfs, "50.toml", RULE)
    root = ["--root", str(s.root), "--sim"]
    r = CliRunner().invoke(main, [*root, "famfs", "up", "dax0.0", "--format", "--no-mount", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mountpoint"] == "/mnt/famfs"
    r = CliRunner().invoke(main, [*root, "famfs", "up", "dax1.1"])
    assert r.exit_code == 2 and "no rule in /etc/daxmode.d has a mount for dax1.1" in r.stderr
