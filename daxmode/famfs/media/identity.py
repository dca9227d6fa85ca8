"""Host identity: the system UUID in /opt/famfs/system_uuid decides who is the famfs master.

The master is the host whose system UUID equals the superblock's ``ts_system_uuid``; every other
host is a client and may only read (famfs_misc.c / famfs_lib.c).  The file is created on first
use with mode 0444 in a 0755 directory, like famfs does; it is never regenerated, because that
would silently change this host's role.  The path is resolved under the Sysfs root so tests and
simulated trees carry their own identity.
"""

from __future__ import annotations

import os
import uuid

from daxmode.errors import FamfsError
from daxmode.sysfs import Sysfs

SYSTEM_UUID_PATH = "opt/famfs/system_uuid"


def read_system_uuid(sysfs: Sysfs) -> uuid.UUID | None:
    """This host's famfs system UUID, or None if the file is missing or unreadable (client)."""
    try:
        with open(sysfs.path(SYSTEM_UUID_PATH), "rb") as f:
            text = f.read(128)
    except OSError:
        return None
    try:
        return uuid.UUID(text.split(b"\0", 1)[0].strip().decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def ensure_system_uuid(sysfs: Sysfs) -> uuid.UUID:
    """Read the system UUID, creating the file (0444, 36 characters plus NUL) if it is missing."""
    have = read_system_uuid(sysfs)
    if have is not None:
        return have
    path = sysfs.path(SYSTEM_UUID_PATH)
    if os.path.exists(path):
        raise FamfsError(f"{sysfs.shown(SYSTEM_UUID_PATH)} exists but holds no UUID; fix or remove it")
    new = uuid.uuid4()
    try:
        os.makedirs(path.parent, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, str(new).encode() + b"\0")
        finally:
            os.close(fd)
    except FileExistsError:
        got = read_system_uuid(sysfs)
        if got is None:
            raise FamfsError(f"{sysfs.shown(SYSTEM_UUID_PATH)} appeared but holds no UUID") from None
        return got
    except OSError as e:
        raise FamfsError(f"cannot create {sysfs.shown(SYSTEM_UUID_PATH)}: {e.strerror}") from None
    return new
