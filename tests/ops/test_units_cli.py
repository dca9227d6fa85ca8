"""install-units / uninstall-units, shell completion, the man page, and non-root behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from daxmode.cli import main
from daxmode.ops import units
from daxmode.sysfs import Sysfs

EXE = "/opt/daxmode/bin/daxmode"  # a path on the system being packaged (--prefix): not checked here


def cli(root, *args: str):
    os.makedirs(root, exist_ok=True)  # --root must be a directory
    return CliRunner().invoke(main, ["--root", str(root), *args])


@pytest.fixture
def exe(tmp_path) -> str:
    """A daxmode script root may run: it and its directories owned by us, 0755."""
    d = tmp_path / "opt" / "bin"
    d.mkdir(parents=True)
    for p in (tmp_path, tmp_path / "opt", d):
        p.chmod(0o755)
    f = d / "daxmode"
    f.write_text(f"#!{os.path.realpath(sys.executable)}\n")
    f.chmod(0o755)
    return str(f)


def test_install_run_flavour_without_systemd(tmp_path, exe):
    EXE = exe
    r = cli(tmp_path, "install-units", "--daxmode", EXE, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["flavour"] == "run"
    rule = (tmp_path / "etc/udev/rules.d/90-daxmode.rules").read_text()
    assert 'ACTION=="add", SUBSYSTEM=="dax", KERNEL=="dax*.*"' in rule
    assert f"RUN+=\"/bin/sh -c '{EXE} apply --udev %k </dev/null >>/run/daxmode-apply.log 2>&1 &'\"" in rule
    assert "@DAXMODE@" not in rule
    assert not (tmp_path / "etc/systemd/system/daxmode-apply@.service").exists()


def test_install_systemd_flavour_when_systemd_runs(tmp_path, exe):
    EXE = exe
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    # a previous RUN install is replaced (same rule file name)
    units.install(Sysfs(tmp_path), flavour="run", executable=EXE)
    rep = units.install(Sysfs(tmp_path), executable=EXE)
    assert rep.flavour == "systemd"
    rule = (tmp_path / "etc/udev/rules.d/90-daxmode.rules").read_text()
    assert 'TAG+="systemd", ENV{SYSTEMD_WANTS}+="daxmode-apply@%k.service"' in rule
    assert "RUN+=" not in rule
    unit = (tmp_path / "etc/systemd/system/daxmode-apply@.service").read_text()
    assert f"ExecStart={EXE} apply --udev %I" in unit and "Type=oneshot" in unit
    # back to run: the unit goes
    rep = units.install(Sysfs(tmp_path), flavour="run", executable=EXE)
    assert rep.removed == [str(tmp_path / "etc/systemd/system/daxmode-apply@.service")]


def test_prefix_and_uninstall(tmp_path):
    dest = tmp_path / "destdir"
    r = cli(
        tmp_path / "root", "install-units", "--prefix", str(dest), "--flavour", "systemd", "--daxmode", EXE
    )
    assert r.exit_code == 0, r.output
    assert (dest / "etc/udev/rules.d/90-daxmode.rules").exists()
    assert (dest / "etc/systemd/system/daxmode-apply@.service").exists()
    assert not (tmp_path / "root/etc").exists()
    r = cli(tmp_path / "root", "uninstall-units", "--prefix", str(dest), "--dry-run")
    assert r.output.count("would remove ") == 2 and (dest / "etc/udev/rules.d/90-daxmode.rules").exists()
    r = cli(tmp_path / "root", "uninstall-units", "--prefix", str(dest))
    assert r.exit_code == 0
    assert not (dest / "etc/udev/rules.d/90-daxmode.rules").exists()
    r = cli(tmp_path / "root", "uninstall-units", "--prefix", str(dest))
    assert r.output == "note: nothing installed\n"


def test_bad_daxmode_path(tmp_path):
    r = cli(tmp_path, "install-units", "--daxmode", "/opt/my daxmode")
    assert r.exit_code == 11 and "spaces or quotes" in r.stderr


def test_shipped_files_are_package_data():
    for name in ("90-daxmode.rules", "90-daxmode-run.rules", "daxmode-apply@.service"):
        assert "@DAXMODE@" in units.template(name)


# --- completion ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F"),
        ("zsh", "#compdef daxmode"),
        ("fish", "complete --no-files --command daxmode"),
    ],
)
def test_completion_scripts(shell, marker):
    r = CliRunner().invoke(main, ["completion", shell])
    assert r.exit_code == 0
    assert marker in r.output and "_DAXMODE_COMPLETE" in r.output


def test_completion_completes_commands_and_devices(tmp_path):
    from daxmode import sim

    sim.standard(tmp_path / "r")
    env = dict(os.environ, _DAXMODE_COMPLETE="bash_complete", COMP_WORDS="daxmode cre", COMP_CWORD="1")
    code = "from daxmode.cli import main; main(prog_name='daxmode')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    assert "plain,create-device" in out
    env.update(COMP_WORDS=f"daxmode --root {tmp_path / 'r'} apply dax1", COMP_CWORD="4")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    assert out.split() == ["plain,dax1.0", "plain,dax1.1"]


# --- man page -----------------------------------------------------------------------------------------


def test_man_page(tmp_path):
    r = CliRunner().invoke(main, ["man"])
    assert r.exit_code == 0
    text = r.output
    assert text.startswith(".TH DAXMODE 1 ")
    for section in (".SH NAME", ".SH SYNOPSIS", ".SH COMMANDS", ".SH FILES", ".SH EXIT STATUS"):
        assert section in text
    for cmd in ("apply", "set", "list", "install\\-units", "create\\-device", "destroy\\-device", "resize"):
        assert f".SS daxmode {cmd} " in text
    assert ".B 11\ninvalid argument or configuration file" in text
    assert "\\-\\-dry\\-run" in text
    out = tmp_path / "daxmode.1"
    assert CliRunner().invoke(main, ["man", "-o", str(out)]).exit_code == 0
    assert out.read_text() == text
    if subprocess.run(["sh", "-c", "command -v groff"], capture_output=True).returncode == 0:
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(out)], capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr, p.stderr


def test_version():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "version" in r.output


# --- what root is asked to run ------------------------------------------------------------------------
def test_refuses_a_daxmode_others_can_replace(tmp_path, exe):
    rules = tmp_path / "etc/udev/rules.d/90-daxmode.rules"
    bindir = os.path.dirname(exe)
    os.chmod(bindir, 0o775)  # group-writable: anyone in the group picks what root runs
    for extra in ((), ("--dry-run",)):
        r = cli(tmp_path, "install-units", "--daxmode", exe, *extra)
        would = "would refuse" if extra else "refusing"
        assert r.exit_code == 13, r.output
        assert r.stderr == (
            f"daxmode: {would} to install units that run {exe} as root: "
            f"{bindir} is writable by group or others (mode 0775)\n"
        )
        assert not rules.exists()
    os.chmod(bindir, 0o755)
    os.chmod(exe, 0o757)  # the script itself, writable by others
    r = cli(tmp_path, "install-units", "--daxmode", exe)
    assert r.exit_code == 13 and f"{exe} is writable by group or others (mode 0757)" in r.stderr
    os.chmod(exe, 0o755)
    # a symlink to it from a directory others may write: that directory is on the path root runs
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    (loose / "daxmode").symlink_to(exe)
    r = cli(tmp_path, "install-units", "--daxmode", str(loose / "daxmode"))
    assert r.exit_code == 13 and f"{loose} is writable by group or others (mode 0777)" in r.stderr
    # the interpreter its #! line names is checked too
    (tmp_path / "opt/bin/python").write_text("")
    os.chmod(tmp_path / "opt/bin/python", 0o666)
    with open(exe, "w") as f:
        f.write(f"#!{tmp_path}/opt/bin/python\n")
    r = cli(tmp_path, "install-units", "--daxmode", exe)
    assert r.exit_code == 13 and f"{tmp_path}/opt/bin/python is writable by group or others" in r.stderr
    assert not rules.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_refuses_a_daxmode_owned_by_someone_else(tmp_path, exe):
    os.chown(exe, 65534, 65534)
    r = cli(tmp_path, "install-units", "--daxmode", exe)
    assert r.exit_code == 13 and f"{exe} is owned by uid 65534" in r.stderr


def test_dry_run_says_would_and_writes_the_absolute_path(tmp_path, exe, monkeypatch):
    r = cli(tmp_path, "install-units", "--daxmode", exe, "--dry-run")
    rule = tmp_path / "etc/udev/rules.d/90-daxmode.rules"
    assert r.exit_code == 0 and r.output == f"would install {rule}\n" + (
        "note: no systemd: udev runs daxmode apply itself; log in /run/daxmode-apply.log\n"
    )
    assert not rule.exists()
    # without --daxmode: the script this process runs as (argv[0]), never a PATH search
    bindir = os.path.dirname(exe)
    monkeypatch.setattr(sys, "argv", [exe])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert units.default_executable() == exe
    monkeypatch.chdir(bindir)
    monkeypatch.setattr(sys, "argv", ["daxmode"])  # relative argv[0]: made absolute
    assert units.default_executable() == exe
    r = cli(tmp_path, "install-units")
    assert r.exit_code == 0 and f"{exe} apply --udev %k" in rule.read_text()


def test_dry_runs_say_would(tmp_path):
    dest = tmp_path / "dest"
    r = cli(tmp_path / "root", "install-units", "--prefix", str(dest), "--flavour", "systemd", "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.output.count("would install ") == 2 and "installed" not in r.output
    assert not (dest / "etc/udev/rules.d/90-daxmode.rules").exists()
    r = cli(
        tmp_path / "root",
        "install-units",
        "--prefix",
        str(dest),
        "--flavour",
        "systemd",
        "--json",
        "--dry-run",
    )
    assert json.loads(r.output)["dry_run"] is True
