"""A local user plays the attacker: prepares daxmode's lock directory, symlinks and
configuration first; root's daxmode must refuse with one line (exit 13) and touch nothing.

The attacker really is another user: the files are made by a subprocess running as
``nobody`` (uid 65534), which needs root to start.  The tree's ``run/`` is made
world-writable like ``/run/lock`` (where daxmode's locks used to live).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daxmode import sim

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")


def as_nobody(script: str) -> None:
    """Run a shell script as nobody (the venv's python lives under root's 0700 home)."""

    def drop() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    subprocess.run(["/bin/sh", "-ec", script], check=True, preexec_fn=drop)


def dm(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daxmode", "--root", str(root), "--sim", *args], capture_output=True, text=True
    )


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory nobody can reach (pytest's own tmp_path sits under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="daxmode-security-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def world(tmp_path: Path) -> sim.Sim:
    s = sim.standard(tmp_path / "root")
    (s.root / "run").mkdir(exist_ok=True)
    (s.root / "run").chmod(0o1777)
    s.clear_log()
    return s


def refused(r: subprocess.CompletedProcess[str], s: sim.Sim, what: str) -> None:
    assert r.returncode == 13, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("daxmode: ") and what in r.stderr, r.stderr
    assert s.log() == [], "the kernel was touched although the lock directory is not safe"
    assert s.driver("dax0.0") == "device_dax"


def test_lock_dir_made_by_another_user(world: sim.Sim, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    d = world.root / "run/daxmode"
    as_nobody(f"mkdir -m 777 '{d}'; ln -s '{victim}' '{d}/dax0.0.lock'")
    refused(dm(world.root, "set", "dax0.0", "fsdev"), world, "owned by uid 65534")
    assert not victim.exists(), "root followed the attacker's symlink"


def test_lock_dir_is_a_symlink(world: sim.Sim) -> None:
    trap = world.root / "run/trap"  # any directory the attacker owns
    as_nobody(f"mkdir -m 777 '{trap}'; ln -s '{trap}' '{world.root}/run/daxmode'")
    refused(dm(world.root, "set", "dax0.0", "fsdev"), world, "is a symlink")
    assert os.listdir(trap) == []


def test_lock_dir_with_loose_mode(world: sim.Sim) -> None:
    d = world.root / "run/daxmode"
    d.mkdir(mode=0o700)
    d.chmod(0o755)
    refused(dm(world.root, "set", "dax0.0", "fsdev"), world, "must be 0700")


def test_lock_file_symlink_is_not_followed(world: sim.Sim, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    d = world.root / "run/daxmode"
    d.mkdir(mode=0o700)
    (d / "dax0.0.lock").symlink_to(victim)
    refused(dm(world.root, "set", "dax0.0", "fsdev"), world, "is a symlink")
    assert not victim.exists()


def test_journal_symlink_is_not_followed(world: sim.Sim, tmp_path: Path) -> None:
    """A journal link (only root could plant one in the 0700 directory) is neither read (no fake
    'interrupted run') nor written through: the journal is renamed over the link itself."""
    victim = tmp_path / "victim"
    victim.write_text('{"pid": 1, "from": "devdax", "to": "system-ram"}')
    d = world.root / "run/daxmode"
    d.mkdir(mode=0o700)
    (d / "dax0.0.journal").symlink_to(victim)
    r = dm(world.root, "list")
    assert r.returncode == 0 and "interrupted" not in r.stderr, r.stderr
    r = dm(world.root, "set", "dax0.0", "fsdev")
    assert r.returncode == 0, r.stderr
    assert victim.read_text().startswith('{"pid": 1'), "root wrote through the symlink"
    assert not (d / "dax0.0.journal").exists()


CONF = '[[device]]\nmatch = { name = "dax0.0" }\nmode = "fsdev"\n'


@pytest.mark.parametrize("how", ["file owned by nobody", "directory owned by nobody", "file mode 0666"])
def test_configuration_another_user_controls_is_refused(world: sim.Sim, how: str) -> None:
    d = world.root / "etc/daxmode.d"
    d.mkdir(parents=True)
    f = d / "50-evil.toml"
    f.write_text(CONF)
    if how == "file owned by nobody":
        os.chown(f, NOBODY, NOBODY)
    elif how == "directory owned by nobody":
        os.chown(d, NOBODY, NOBODY)
    else:
        f.chmod(0o666)
    r = dm(world.root, "apply")
    assert r.returncode == 13, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and ("not root" in r.stderr or "writable by group or others" in r.stderr)
    assert world.driver("dax0.0") == "device_dax" and world.log() == []


def test_root_owned_configuration_applies(world: sim.Sim) -> None:
    d = world.root / "etc/daxmode.d"
    d.mkdir(parents=True)
    (d / "50.toml").write_text(CONF)
    r = dm(world.root, "apply")
    assert r.returncode == 0, r.stderr
    assert world.driver("dax0.0") == "fsdev_dax"
