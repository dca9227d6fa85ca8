"""Guest side: bring up this guest's links of the private network.  Runs INSIDE a guest (stdlib only).

``python -m mhd.guest.guestnet HOST LINK...`` finds each link's NIC by the MAC the harness gave it
(52:54:00:6d:HOST:LINK, read from /sys/class/net), names it ``mhdLINK``, sets it up and assigns
10.77.LINK.{1|2}/24, all in one ``ip -batch`` (iproute2).  No default route: only the guests' own
subnets are reachable.

Why not pyroute2: every Python import costs ~50x under TCG, and importing pyroute2 (0.29 s on the
host) took ~8 s in a guest, more than everything else the guest agent preloads together; one exec
of ``ip`` costs a fraction of a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

SYS_NET = "/sys/class/net"


def mac(host: int, link: int) -> str:
    return f"52:54:00:6d:{host:02x}:{link:02x}"


def addr(host: int, link: int) -> str:
    return f"10.77.{link}.{1 if host == 0 else 2}"


def interfaces_by_mac(base: str = SYS_NET) -> dict[str, str]:
    out = {}
    for name in os.listdir(base) if os.path.isdir(base) else []:
        try:
            with open(f"{base}/{name}/address") as f:
                out[f.read().strip().lower()] = name
        except OSError:
            continue
    return out


def batch(host: int, links: list[int], by_mac: dict[str, str]) -> list[str]:
    """The ``ip -batch`` commands for ``links`` (pure; every link's NIC must be in ``by_mac``)."""
    cmds = ["link set dev lo up"]
    for ln in links:
        name = by_mac[mac(host, ln)]
        new = f"mhd{ln}"
        if name != new:
            cmds += [f"link set dev {name} down", f"link set dev {name} name {new}"]
        cmds += [f"link set dev {new} up", f"addr replace {addr(host, ln)}/24 dev {new}"]
    return cmds


def main(argv: list[str]) -> int:
    host = int(argv[0])
    links = [int(a) for a in argv[1:]]
    # /init loads virtio_net before udevd starts (no udev rename can race the one below); a custom
    # kernel may lack it there, so load it here too and let udev finish with the new NICs.
    subprocess.run(["modprobe", "virtio_net"], check=False)
    if os.path.exists("/run/udev/control"):
        subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
    wanted = {mac(host, ln) for ln in links}
    deadline = time.monotonic() + 30
    while not wanted <= (by_mac := interfaces_by_mac()).keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    missing = sorted(wanted - by_mac.keys())
    if missing:
        print(f"guestnet: no interface with MAC {', '.join(missing)}", file=sys.stderr)
        return 1
    cmds = batch(host, links, by_mac)
    r = subprocess.run(["ip", "-batch", "-"], input="\n".join(cmds) + "\n", text=True, capture_output=True)
    if r.returncode != 0:
        print(f"guestnet: ip -batch failed: {r.stderr.strip()}", file=sys.stderr)
        return 1
    for ln in links:
        print(f"mhd{ln} {mac(host, ln)} {addr(host, ln)}/24")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
