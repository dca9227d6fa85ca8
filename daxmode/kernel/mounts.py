"""Which mounts use a dax device, from ``/proc/self/mountinfo``.

A device may not leave its mode while something is mounted on it: a famfs mount (v1, the
kernel's fuse-famfs, or daxmode's own FUSE server) names it as its source or in its options
(``daxdev=/dev/dax0.0``).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from daxmode.kernel import paths
from daxmode.kernel.paths import MOUNTINFO
from daxmode.sysfs import Sysfs

_ESC = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (fs/proc_namespace.c)."""
    return _ESC.sub(lambda m: chr(int(m.group(1), 8)), s)


class Mount(NamedTuple):
    mount_point: str
    fstype: str
    source: str
    super_options: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo lines: fields after the ``-`` separator are fstype, source, super options."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=_unescape(fields[sep + 3]) if len(fields) > sep + 3 else "",
            )
        )
    return mounts


def _names_device(value: str, name: str) -> bool:
    v = value.strip()
    return v in (f"/dev/{name}", name) or (v.startswith("/dev/") and os.path.basename(v) == name)


def mount_uses(m: Mount, name: str) -> bool:
    if _names_device(m.source, name):
        return True
    for opt in m.super_options.split(","):
        _, _, val = opt.partition("=")
        if val and _names_device(val, name):
            return True
    return False


def mounts(sysfs: Sysfs) -> list[Mount]:
    return parse_mountinfo(sysfs.read_or(MOUNTINFO, "") or "")


def this_process_mounts() -> list[Mount]:
    """The mounts this process sees, from the real /proc whatever the Sysfs root: for locks, which
    are real on this host even when daxmode runs over a simulated tree."""
    try:
        with open("/" + MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return []


def mounts_using(sysfs: Sysfs, name: str) -> list[Mount]:
    """Mounts whose source or super options name ``/dev/<name>`` (famfs, fuse, anything)."""
    return [m for m in mounts(sysfs) if mount_uses(m, name)]


def set_fuse_readahead(connection: int, kb: int) -> bool:
    """Set one FUSE connection's readahead window (its bdi's ``read_ahead_kb``); False if the
    kernel refused or the connection is gone."""
    try:
        with open(paths.fuse_bdi_attr(connection, "read_ahead_kb"), "w") as f:
            f.write(str(kb))
    except OSError:
        return False
    return True


def mount_at(sysfs: Sysfs, mount_point: str) -> Mount | None:
    """The (topmost) mount whose mount point is ``mount_point`` (an absolute path), if any."""
    found = None
    for m in mounts(sysfs):
        if m.mount_point == mount_point:
            found = m
    return found
