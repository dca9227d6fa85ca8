"""In-guest, real kernel: concurrent runs, signals and SIGKILL (issue 13).

Needs memory that may be onlined (DAXMODE_VM_ONLINE_OK=1: the nvdimm guest) and a second dax
device (DAXMODE_TEST_DEV2) for the concurrent runs.  Every verdict is read from sysfs and
/run/daxmode, never from daxmode's output.  DAXMODE_WRITE_DELAY (test-only) slows every write
so a signal lands inside a transition that the kernel would otherwise finish in a fraction of
a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .sysview import blocks, driver

DEV = os.environ.get("DAXMODE_TEST_DEV", "")
DEV2 = os.environ.get("DAXMODE_TEST_DEV2", "")
ONLINE_OK = os.environ.get("DAXMODE_VM_ONLINE_OK") == "1"
MEM = Path("/sys/devices/system/memory")
POLICY = MEM / "auto_online_blocks"
RUN = Path("/run/daxmode")
DAXMODE = [sys.executable, "-m", "daxmode"]

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not ONLINE_OK, reason="onlining memory is safe only on the nvdimm guest"),
]


def run(*args: str, delay: float = 0.0) -> subprocess.Popen[str]:
    env = dict(os.environ, DAXMODE_WRITE_DELAY=str(delay))
    return subprocess.Popen(
        [*DAXMODE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def ok(*args: str) -> None:
    p = subprocess.run([*DAXMODE, *args], capture_output=True, text=True)
    assert p.returncode == 0, (args, p.stderr)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def online_policy() -> Iterator[None]:
    saved = POLICY.read_text().strip()
    POLICY.write_text("online")
    yield
    POLICY.write_text(saved)


@pytest.fixture(autouse=True)
def back_to_devdax() -> Iterator[None]:
    yield
    for d in (DEV, DEV2):
        if d and driver(d) != "device_dax":
            subprocess.run([*DAXMODE, "set", d, "devdax", "--force"], capture_output=True)


def test_concurrent_set_on_two_devices_under_an_online_policy(online_policy: None) -> None:
    if not DEV2:
        pytest.fail("DAXMODE_TEST_DEV2 is not set: the nvdimm guest must have a second dax device")
    procs = [run("set", d, "system-ram", delay=0.05) for d in (DEV, DEV2)]
    outs = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert all(rc == 0 for rc, _ in outs), outs
    for d in (DEV, DEV2):
        assert driver(d) == "kmem" and blocks(d) and set(blocks(d).values()) == {"online"}, (d, blocks(d))
    assert POLICY.read_text().strip() == "online"
    procs = [run("set", d, "devdax", "--force", delay=0.05) for d in (DEV, DEV2)]
    outs = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert all(rc == 0 for rc, _ in outs), outs
    for d in (DEV, DEV2):
        assert driver(d) == "device_dax" and not blocks(d), (d, blocks(d))
    assert POLICY.read_text().strip() == "online"
    assert not list(RUN.glob("*.journal")) and not (RUN / "policy.hold").exists()


def test_sigint_mid_onlining_rolls_back() -> None:
    p = run("set", DEV, "system-ram", delay=0.3)
    wait_for(lambda: "online" in blocks(DEV).values(), "the first block to come online")
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=300)
    err = p.communicate()[1]
    assert rc == 130, err
    assert err.count("\n") == 1 and f"rolled back, {DEV} is back in devdax" in err, err
    assert driver(DEV) == "device_dax" and not blocks(DEV)


def test_sigkill_with_the_policy_held_then_recovery(online_policy: None) -> None:
    p = run("set", DEV, "system-ram", delay=0.5)
    wait_for(lambda: POLICY.read_text().strip() == "offline", "the policy hold")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert POLICY.read_text().strip() == "offline", "killed while the policy is held"
    journal = json.loads((RUN / f"{DEV}.journal").read_text())
    assert journal["to"] == "system-ram" and journal["step"] == "bind kmem", journal
    ls = subprocess.run([*DAXMODE, "list"], capture_output=True, text=True)
    assert f"{DEV}: a transition devdax -> system-ram" in ls.stderr, ls.stderr
    r = subprocess.run([*DAXMODE, "set", DEV, "system-ram"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "restored auto_online_blocks to 'online'" in r.stderr, r.stderr
    assert POLICY.read_text().strip() == "online"
    assert driver(DEV) == "kmem" and set(blocks(DEV).values()) == {"online"}
    assert not (RUN / f"{DEV}.journal").exists() and not (RUN / "policy.hold").exists()
    ok("set", DEV, "devdax", "--force")
    assert driver(DEV) == "device_dax" and not blocks(DEV)


def test_sigkill_mid_onlining_then_recovery_both_ways() -> None:
    """Killed with some blocks online: `set system-ram` completes, `set devdax --force` undoes."""
    p = run("set", DEV, "system-ram", delay=0.3)
    wait_for(lambda: "online" in blocks(DEV).values(), "the first block to come online")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    states = blocks(DEV)
    assert driver(DEV) == "kmem" and "online" in states.values()
    r = subprocess.run([*DAXMODE, "set", DEV, "devdax"], capture_output=True, text=True)
    assert r.returncode == 7 and "use --force" in r.stderr, (
        r.stderr
    )  # onlined memory is never dropped silently
    assert (RUN / f"{DEV}.journal").exists(), "a refusal does not consume the journal"
    r = subprocess.run([*DAXMODE, "set", DEV, "system-ram"], capture_output=True, text=True)
    assert r.returncode == 0 and "was interrupted" in r.stderr, r.stderr
    assert set(blocks(DEV).values()) == {"online"}
    ok("set", DEV, "devdax", "--force")
    assert driver(DEV) == "device_dax" and not blocks(DEV)
