"""What makes a daxmode famfs mount look like famfs_fused's to famfs's own CLI and smoke tests.

famfs's tools accept a FUSE mount as famfs when ``getxattr(path, "user.famfs.shadow")`` names a
directory holding ``root/`` and a socket ``sock`` (famfs ``file_is_famfs``, ``src/famfs_lib.c:144-180``);
they then read and write the shadow tree and flock ``.meta/.log``.  This module puts the pieces
together for the server: the shadow namespace (daxmode.famfs.mount.shadow), the REST socket
(daxmode.famfs.mount.rest), the flock handling (daxmode.famfs.mount.flocks) and the FUSE handlers
that differ from the plain mount's: LOOKUP/GETATTR give provisional inodes zero cache timeouts,
GETXATTR answers ``user.famfs.shadow`` on every inode.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from daxmode.famfs.mount import ioctls
from daxmode.famfs.mount.flocks import ClientLocks, notify_inval_inode
from daxmode.famfs.mount.handlers import TTL, FamfsFuse
from daxmode.famfs.mount.namespace import LOG_ID
from daxmode.famfs.mount.rest import RestServer, RestState
from daxmode.famfs.mount.shadow import SHADOW_XATTR, ShadowNamespace, is_provisional
from daxmode.fuse import proto as P
from daxmode.fuse.server import FuseError


def shadow_dir(state_dir: Path, mountpoint: str) -> str:
    """``<run>/famfs-mounts/<hash>.shadow``: short enough for ``sock`` (108-byte sun_path), in the
    root-only run directory."""
    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
    return str(state_dir / f"{key}.shadow")


class FamfsCompat:
    """The famfs_fused contract for one mount (see the module docstring)."""

    def __init__(self, shadow: str, volume: str, log: Callable[[str], None]) -> None:
        self.shadow = shadow
        self.volume = volume
        self.log = log
        self.ns: ShadowNamespace | None = None
        self.state = RestState()
        self.rest: RestServer | None = None
        self.locks: ClientLocks | None = None
        if os.path.lexists(shadow):  # left by a server that died: nothing in it is trusted
            shutil.rmtree(shadow)
        os.mkdir(shadow, 0o700)

    def namespace(self, *args: object, **kw: object) -> ShadowNamespace:
        self.ns = ShadowNamespace(*args, shadow=self.shadow, log=self.log, **kw)
        ns = self.ns
        self.state.inodes = lambda: (len(ns.inodes), len(ns.pending_nodeids()))
        self.state.dump = self._dump
        return self.ns

    def _dump(self) -> list[str]:
        ns = self.ns
        if ns is None:
            return []
        return [f"{i.nodeid} {'d' if i.is_dir else 'f'} {i.mode:o} {i.size} {ns.path_of(i.nodeid)!r}"
                for i in list(ns.inodes.values())]  # fmt: skip

    def install(
        self, fs: FamfsFuse, fuse_fd: Callable[[], int | None], spare_worker: Callable[[], None]
    ) -> None:
        """Add the handlers and the INIT flag to ``fs`` (before the mount's INIT)."""
        ns = self.ns
        assert ns is not None and fs.ns is ns
        self.locks = ClientLocks(
            self.volume, fuse_fd=fuse_fd, writer_done=lambda: self._writer_done(fuse_fd),
            spare_worker=spare_worker, log=self.log,
        )  # fmt: skip
        fs.init_want |= P.FLOCK_LOCKS
        fs.overrides.update(self.locks.handlers())
        state = self.state

        def lookup(h: P.InHeader, body: memoryview) -> bytes:
            ino = ns.lookup(h.nodeid, P.name_arg(body))
            state.looked_up(ino is not None)
            if ino is None:
                raise FuseError(errno.ENOENT)
            ttl = 0.0 if is_provisional(ino.nodeid) else TTL
            return P.pack_entry_out(ino.nodeid, fs.attr(ino), ttl, ttl)

        def getattr_(h: P.InHeader, body: memoryview) -> bytes:
            ino = ns.get(h.nodeid)
            if ino is None:
                raise FuseError(errno.ENOENT)
            return P.pack_attr_out(fs.attr(ino), 0.0 if is_provisional(ino.nodeid) else TTL)

        def getxattr(h: P.InHeader, body: memoryview) -> bytes:
            size, name = P.parse_getxattr_in(body)
            if name != SHADOW_XATTR:
                return fs.getxattr(h, body)
            value = self.shadow.encode()
            if size == 0:
                return P.pack_getxattr_size(len(value))
            if size < len(value):
                raise FuseError(errno.ERANGE)
            return value

        def ioctl(h: P.InHeader, body: memoryview) -> bytes:
            ino = ns.get(h.nodeid)
            if ino is None:
                raise FuseError(errno.ENOENT)
            return ioctls.answer(ino, body)

        fs.overrides[P.IOCTL] = ioctl
        fs.overrides[P.LOOKUP] = lookup
        fs.overrides[P.GETATTR] = getattr_
        fs.overrides[P.GETXATTR] = getxattr

    def _writer_done(self, fuse_fd: Callable[[], int | None]) -> None:
        """A writer let go of the volume lock: its mapped writes reach the media (data before the
        log), the log is re-played, and names it left without an entry are dropped."""
        ns = self.ns
        assert ns is not None
        fd = fuse_fd()
        if fd is not None:
            for nid in [*ns.pending_nodeids(), LOG_ID]:
                notify_inval_inode(fd, nid)
        ns.drop_unlogged()

    def start_rest(self) -> None:
        """Without the socket famfs's tools take the mount for some other FUSE file system; the
        mount itself still works, so a failure here is a line in the log, not a failed mount."""
        try:
            self.rest = RestServer(os.path.join(self.shadow, "sock"), self.state, self.log)
        except OSError as e:
            self.log(f"famfs REST socket {self.shadow}/sock not started ({e}): famfs's CLI will not "
                     "recognise this mount")  # fmt: skip

    def close(self) -> None:
        if self.rest is not None:
            self.rest.close()
            self.rest = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.shadow)
