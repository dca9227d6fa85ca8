"""Every guest is its own machine: machine-id, hostname and famfs system UUID differ between the
guests and from the host's (the real ones, and the decoys the harness planted), issue 13."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm

READ = "cat /etc/machine-id; hostname; tr -d '\\000' </opt/famfs/system_uuid; echo"


def test_each_guest_has_its_own_identity(hosts) -> None:  # type: ignore[no-untyped-def]
    seen = []
    for h in hosts:
        r = h.run(["sh", "-c", READ], timeout=120)
        assert r.rc == 0, r.stderr
        machine_id, hostname, system_uuid = r.stdout.split()
        assert machine_id == h.env["DAXMODE_VM_MACHINE_ID"]
        assert hostname == h.env["DAXMODE_VM_HOSTNAME"]
        assert system_uuid == h.env["DAXMODE_VM_SYSTEM_UUID"]
        for key in ("MHD_HOST_MACHINE_ID", "MHD_DECOY_MACHINE_ID"):
            assert machine_id != h.env.get(key), f"{h.name} has the {key}"
        for key in ("MHD_HOST_SYSTEM_UUID", "MHD_DECOY_SYSTEM_UUID"):
            assert system_uuid != h.env.get(key), f"{h.name} has the {key}"
        seen.append((machine_id, hostname, system_uuid))
    for i in range(3):
        values = [s[i] for s in seen]
        assert len(set(values)) == len(values), f"guests share an identity: {seen}"
