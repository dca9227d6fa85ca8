"""Two hosts, one shared device: data written on one is read on the other, modes switch on both.

Host A stores a pattern through a MAP_SHARED mapping of /dev/daxX.Y (length and offset aligned to
the device's align, which device-dax requires); host B maps the same range and must read the same
bytes; then the roles swap, so neither direction can pass by accident.  Afterwards the device goes
to fsdev and back to devdax on both hosts with ``daxmode set``, and the data must still be there
(mode switches rebind drivers; they must not touch the media).
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
from pathlib import Path

import pytest

# The guests see the host's root, so the venv running this file is usable inside them at the same path.
PROJECT = Path(__file__).resolve().parents[2]
PY = sys.executable
DAXMODE = str(Path(sys.executable).parent / "daxmode")

# Runs inside a guest with the venv's python: map one align-sized window at OFFSET and either write a
# pattern derived from SEED (printing its digest) or read it back (printing the digest found).
GUEST_IO = r"""
import hashlib, json, mmap, os, sys
dev, op, seed = sys.argv[1], sys.argv[2], sys.argv[3]
sysd = f"/sys/bus/dax/devices/{dev}"
size = int(open(f"{sysd}/size").read())
align = int(open(f"{sysd}/align").read())
offset = (size // 2) // align * align          # the middle: clear of any superblock at 0
fd = os.open(f"/dev/{dev}", os.O_RDWR)
m = mmap.mmap(fd, align, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
if op == "write":
    block = hashlib.sha512(seed.encode()).digest() * 64  # 4 KiB
    data = (block * (align // len(block)))[:align]
    m[:] = data
    # No msync: it fails with EINVAL on device-dax (device_dax has no fsync; measured in a guest); stores
    # are already in the memory.
got = hashlib.sha256(m[:]).hexdigest()
print(json.dumps({"offset": offset, "align": align, "sha256": got}))
m.close(); os.close(fd)
"""


def guest_io(host, op: str, seed: str) -> dict:
    dev = host.env["DAXMODE_TEST_DEV"]
    py = f"{PY} -c {shlex.quote(GUEST_IO)} {dev} {op} {seed}"
    r = host.run(py, timeout=300)
    assert r.rc == 0, f"{host.name}: {op} failed: {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def driver(host) -> str:
    dev = host.env["DAXMODE_TEST_DEV"]
    r = host.run(f"basename $(readlink /sys/bus/dax/devices/{dev}/driver)", timeout=60)
    return r.stdout.strip()


def daxmode_set(host, mode: str) -> None:
    dev = host.env["DAXMODE_TEST_DEV"]
    r = host.run([DAXMODE, "set", dev, mode], timeout=300)
    assert r.rc == 0, f"{host.name}: daxmode set {dev} {mode} -> rc {r.rc}: {r.stderr.strip()}"


@pytest.fixture(scope="module")
def devdax_on_both(two_hosts):
    for h in two_hosts:
        daxmode_set(h, "devdax")
        assert driver(h) == "device_dax"
    return two_hosts


def test_pattern_written_on_a_is_read_on_b_and_back(devdax_on_both) -> None:
    a, b = devdax_on_both
    seed1, seed2 = secrets.token_hex(8), secrets.token_hex(8)
    wrote = guest_io(a, "write", seed1)
    read = guest_io(b, "read", "-")
    assert read["offset"] == wrote["offset"]
    assert read["sha256"] == wrote["sha256"], "host B does not see host A's bytes"
    wrote2 = guest_io(b, "write", seed2)
    assert wrote2["sha256"] != wrote["sha256"]
    assert guest_io(a, "read", "-")["sha256"] == wrote2["sha256"], "host A does not see host B's bytes"


def test_fsdev_and_back_on_both_hosts_keeps_the_data(devdax_on_both) -> None:
    a, b = devdax_on_both
    facts = PROJECT / "mhd/guest/facts.py"
    r = a.run(f"{PY} {facts}", timeout=120)
    assert r.rc == 0, r.stderr
    got = json.loads(r.stdout)
    if not got["fsdev"]:
        pytest.skip(f"kernel {got['kernel']} has no fsdev_dax driver: fsdev mode does not exist on it")
    before = guest_io(a, "read", "-")["sha256"]
    for h in (a, b):
        daxmode_set(h, "fsdev")
        assert driver(h) == "fsdev_dax", f"{h.name} not in fsdev"
    for h in (a, b):
        daxmode_set(h, "devdax")
        assert driver(h) == "device_dax", f"{h.name} not back in devdax"
    assert guest_io(b, "read", "-")["sha256"] == before
    assert guest_io(a, "read", "-")["sha256"] == before


NETLINK = """\
import json
from pyroute2 import IPRoute
with IPRoute() as ip:
    addrs = [
        (a.get_attr("IFA_LABEL"), a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ip.get_addr(family=2)
    ]
    up = {ln.get_attr("IFLA_IFNAME"): ln.get_attr("IFLA_OPERSTATE") for ln in ip.get_links()}
    default = any(r["dst_len"] == 0 for r in ip.get_routes(family=2, table=254))
print(json.dumps({"addrs": addrs, "up": up, "default": default}))
"""


def test_private_network_links_the_hosts(two_hosts) -> None:
    """The guests' private link as the kernel has it (netlink, through pyroute2: no parsing of
    ip(8) output): 10.77.1.1/24 on host 0, 10.77.1.2/24 on host 1, up, no default route; then host
    1 echoes one UDP datagram on it and host 0 must get its token back."""
    a, b = two_hosts
    for host, want in ((a, "10.77.1.1"), (b, "10.77.1.2")):
        r = host.run([PY, "-c", NETLINK], timeout=120)
        assert r.rc == 0, r.stderr
        net = json.loads(r.stdout)
        assert ["mhd1", want, 24] in net["addrs"], net
        assert net["up"].get("mhd1") in ("UP", "UNKNOWN"), net
        assert not net["default"], "the private network must not route anywhere else"
    token = secrets.token_hex(8)
    server = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.77.1.2', 7777)); "
        "s.settimeout(120); d, p = s.recvfrom(100); s.sendto(b'echo:' + d, p)"
    )
    r = b.run(f"setsid {PY} -c {shlex.quote(server)} </dev/null >/dev/null 2>&1 &", 60)
    assert r.rc == 0
    client = (
        "import socket, sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
        "for _ in range(30):\n"
        f"    s.sendto(b'{token}', ('10.77.1.2', 7777))\n"
        "    try:\n"
        "        print(s.recvfrom(100)[0].decode()); break\n"
        "    except TimeoutError:\n"
        "        pass\n"
    )
    r = a.run([PY, "-c", client], timeout=120)
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == f"echo:{token}"
