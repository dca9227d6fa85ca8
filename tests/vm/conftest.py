"""Host-side fixtures for the multi-host VM scenarios (tests/vm/test_*.py).

The harness (qemu/cxl-mhd.sh --suite tests/vm) boots the guests, then runs these tests on the host
with DAXMODE_VM_SESSION naming a session file (agent socket per guest).  ``hosts[i].run(cmd,
timeout=...)`` runs ``cmd`` (a list, or a shell string) in guest i and returns ``.rc .stdout
.stderr``.  Without a session every test that uses ``hosts`` is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhd.host.agentclient import SessionHost, load_session


@pytest.fixture(scope="session")
def hosts() -> Iterator[list[SessionHost]]:
    session = os.environ.get("DAXMODE_VM_SESSION")
    if not session:
        pytest.skip("needs booted guests: run qemu/cxl-mhd.sh --suite tests/vm (or make qemu-test)")
    booted = load_session(Path(session))
    try:
        yield booted
    finally:
        for h in booted:
            h.close()


@pytest.fixture(scope="session")
def two_hosts(hosts: list[SessionHost]) -> tuple[SessionHost, SessionHost]:
    if len(hosts) < 2:
        pytest.skip(f"needs 2 hosts sharing the device, the session has {len(hosts)}")
    return hosts[0], hosts[1]
