"""Which medium a famfs command opens: famfs's choice, over the device-access layer.

An image file is mapped as it is; a dax device through :mod:`daxmode.fsdev` (mapped in devdax
mode, or switched from fsdev to devdax and back).  A device that daxmode's own mount server
holds is reached the way that mount allows: on the copy data path the device stays in devdax
mode and is mapped beside the server; on the DAX data path (fsdev mode) it has no mmap of its
own, so the volume is reached through the mount (:class:`~daxmode.famfs.mount.metamap.MountMapping`).
Any other mount refuses the device.  Either way the caller gets a
:class:`~daxmode.famfs.media.volume.Medium`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Protocol

from daxmode.errors import InvalidArgument
from daxmode.famfs.media.access import FamfsSession
from daxmode.famfs.media.identity import read_system_uuid
from daxmode.famfs.media.volume import Medium, Volume
from daxmode.famfs.mount import records
from daxmode.fsdev import Mapping, claim_device, looks_like_device, map_claimed, map_image, mounted_at
from daxmode.kernel.mounts import mounts as all_mounts
from daxmode.sysfs import Sysfs


def _our_mount(sysfs: Sysfs, name: str, where: list[str]) -> str | None:
    """The mount point if every mount of ``name`` is one live daxmode famfs mount, else None."""
    if len(where) != 1:
        return None
    for r in records.for_device(sysfs, name):
        if r.mountpoint == where[0] and r.phase == "live" and records.is_live(sysfs, r):
            return r.mountpoint
    return None


@contextlib.contextmanager
def open_device(sysfs: Sysfs, name: str, *, writable: bool = True) -> Iterator[Medium]:
    """Dax device ``name`` as a famfs medium (see the module docstring).  The mode and the mounts
    are read under the device lock, which a devdax mapping or a mount's mapping releases at once
    and an fsdev switch keeps until it has switched back."""
    with claim_device(sysfs, name) as c:
        via = _our_mount(sysfs, c.name, c.mounts) if c.mounts else None
        if via is not None and c.info.mode == "fsdev":  # DAX data path: only the mount reaches it
            from daxmode.famfs.mount.metamap import open_via_mount

            vm = open_via_mount(via, f"/dev/{c.name}", c.info.size, writable=writable)
            c.release()
            try:
                yield vm
            finally:
                vm.close()
            return
        with map_claimed(c, writable=writable, shared_with=via) as m:
            yield m


@contextlib.contextmanager
def open_medium(sysfs: Sysfs, target: str, *, writable: bool = True) -> Iterator[Medium]:
    """A dax device by name (``dax0.0``, ``/dev/dax0.0``) or an image file by path (anything else
    that exists is refused by :func:`daxmode.fsdev.open_image`, naming what it is)."""
    if os.path.lexists(target) and not looks_like_device(target):
        with map_image(target, writable=writable) as m:
            yield m
        return
    if not looks_like_device(target):
        raise InvalidArgument(f"{target}: neither a dax device (daxX.Y) nor an image file")
    with open_device(sysfs, target, writable=writable) as medium:
        yield medium


@contextlib.contextmanager
def open_famfs(target: str, sysfs: Sysfs | None = None, *, writable: bool = False) -> Iterator[FamfsSession]:
    """Open ``target`` (dax device or image file), play its log, and yield a session whose files
    give zero-copy views (:mod:`daxmode.famfs.media.access`).

    Read-only by default; ``writable=True`` maps it writable (file data writes stay master-only)."""
    sysfs = sysfs or Sysfs("/")
    with open_medium(sysfs, target, writable=writable) as medium:
        vol = Volume(medium, read_system_uuid(sysfs))
        try:
            yield FamfsSession(vol)
        finally:
            vol.close()


class _Opened(Protocol):
    @property
    def daxdev(self) -> str:
        """/dev/daxX.Y, or the image file's path."""
        ...


def mounts_of(sysfs: Sysfs, m: _Opened) -> list[str]:
    """Mount points on this host that serve the medium ``m`` (mkfs refuses them, --force or not).

    A device: every mount whose source or options name it (daxmode's FUSE mount, famfs's own, the
    famfs kernel's).  An image file: every mount whose source is the same file (daxmode's mount
    shows the image's path as its source), and every daxmode mount record naming it, since the
    record outlives a server that died mounted."""
    if getattr(m, "kind", "") != "image":
        return mounted_at(sysfs, os.path.basename(m.daxdev))
    me = os.fstat(m.fd) if isinstance(m, Mapping) else os.stat(m.daxdev)

    def same(path: str) -> bool:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return False
        return (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino)

    found = [x.mount_point for x in all_mounts(sysfs) if x.source.startswith("/") and same(x.source)]
    found += [r.mountpoint for r in records.records(sysfs) if same(r.source) and r.mountpoint not in found]
    return found
