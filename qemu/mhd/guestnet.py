"""Guest side: bring up this guest's links of the private network with pyroute2.  Runs INSIDE a guest.

``python guestnet.py HOST LINK...`` finds each link's NIC by the MAC the harness gave it
(52:54:00:6d:HOST:LINK), names it ``mhdLINK``, sets it up and assigns 10.77.LINK.{1|2}/24.
No default route: only the guests' own subnets are reachable.
"""

from __future__ import annotations

import subprocess
import sys
import time

from pyroute2 import IPRoute


def mac(host: int, link: int) -> str:
    return f"52:54:00:6d:{host:02x}:{link:02x}"


def addr(host: int, link: int) -> str:
    return f"10.77.{link}.{1 if host == 0 else 2}"


def main(argv: list[str]) -> int:
    host = int(argv[0])
    links = [int(a) for a in argv[1:]]
    # udev coldplug is limited to a few subsystems in harness guests, so load the NIC driver here.
    subprocess.run(["modprobe", "virtio_net"], check=False)
    with IPRoute() as ipr:
        wanted = {mac(host, ln) for ln in links}
        deadline = time.monotonic() + 30
        while True:
            by_mac = {
                link.get_attr("IFLA_ADDRESS"): (link["index"], link.get_attr("IFLA_IFNAME"))
                for link in ipr.get_links()
            }
            if wanted <= by_mac.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")
        for ln in links:
            want = mac(host, ln)
            if want not in by_mac:
                print(f"guestnet: no interface with MAC {want}", file=sys.stderr)
                return 1
            idx, name = by_mac[want]
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, ifname=f"mhd{ln}")
            ipr.link("set", index=idx, state="up")
            a = addr(host, ln)
            if not any(x.get_attr("IFA_ADDRESS") == a for x in ipr.get_addr(index=idx)):
                ipr.addr("add", index=idx, address=a, prefixlen=24)
            print(f"mhd{ln} ({name}) {want} {a}/24")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
