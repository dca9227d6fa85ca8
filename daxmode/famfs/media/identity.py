"""Host identity: the system UUID in /opt/famfs/system_uuid decides who is the famfs master.

The master is the host whose system UUID equals the superblock's ``ts_system_uuid``; every other
host is a client and may only read (famfs_misc.c / famfs_lib.c).  The file is created on first
use with mode 0444 in a 0755 directory, like famfs does; it is never regenerated, because that
would silently change this host's role.  The path is resolved under the Sysfs root so tests and
simulated trees carry their own identity.

If the file is lost, every volume this host made turns read-only to it; :func:`adopt_system_uuid`
takes a volume's master identity back (``daxmode famfs identity --adopt VOLUME``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass

from daxmode.errors import FamfsError
from daxmode.famfs.media import layout as L
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
    return claim_system_uuid(sysfs)[0]


def claim_system_uuid(sysfs: Sysfs) -> tuple[uuid.UUID, bool]:
    """:func:`ensure_system_uuid`, and whether this call minted it (callers say so: a new identity
    makes this host a client of every volume an older one made)."""
    have = read_system_uuid(sysfs)
    if have is not None:
        return have, False
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
        return got, False
    except OSError as e:
        raise FamfsError(f"cannot create {sysfs.shown(SYSTEM_UUID_PATH)}: {e.strerror}") from None
    return new, True


@dataclass(frozen=True)
class Adoption:
    system_uuid: uuid.UUID
    previous: uuid.UUID | None
    changed: bool


def adopt_system_uuid(sysfs: Sysfs, superblock: bytes, device_size: int, *, force: bool) -> Adoption:
    """Make the master identity of the volume whose first bytes are ``superblock`` this host's.

    Refuses a superblock with any problem, a nil identity, and (unless ``force``) a host that
    already has a different identity or an unreadable file: replacing it would turn this host
    into a client of every volume it made.  The file is replaced atomically (0444, as created)."""
    problems = L.superblock_problems(superblock, device_size)
    if problems:
        raise FamfsError(f"cannot adopt: {problems[0]}")
    theirs = L.unpack_superblock(superblock).system_uuid
    if theirs.int == 0:
        raise FamfsError("cannot adopt: the volume's master identity (ts_system_uuid) is all zeros")
    path = sysfs.path(SYSTEM_UUID_PATH)
    shown = sysfs.shown(SYSTEM_UUID_PATH)
    mine = read_system_uuid(sysfs)
    if mine == theirs:
        return Adoption(theirs, mine, False)
    if not force and mine is not None:
        raise FamfsError(
            f"this host's famfs identity is {mine}, the volume's master is {theirs}; adopting it would make "
            f"this host a client of the volumes {mine} made (--force replaces {shown})"
        )
    if not force and os.path.lexists(path):
        raise FamfsError(f"{shown} exists but holds no UUID; --force replaces it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        os.makedirs(path.parent, mode=0o755, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            os.write(fd, str(theirs).encode() + b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FamfsError(f"cannot write {shown}: {e.strerror}") from None
    return Adoption(theirs, mine, True)
