"""The shadow tree famfs's own CLI expects beside a FUSE mount, kept by daxmode's server.

famfs's CLI finds its server's state through ``getxattr(path, "user.famfs.shadow")`` (famfs
``famfs_get_shadow_from_xattr``, ``src/famfs_mount.c:136``); under that directory ``root/`` holds
a YAML document per file and a real directory per directory (famfs ``famfs_emit_file_yaml``), and
``sock`` is the server's REST socket (daxmode.famfs.mount.rest).  famfs's ``creat``, ``cp`` and
``mkdir`` on a FUSE mount write the shadow entry first, open the new file through the mount, and
append the log entry last (famfs ``__famfs_mkfile``, ``src/famfs_lib.c:3975-4000``), so a name
can be in the shadow tree before it is in the log.

daxmode's log stays the source of truth:

* every file and directory played from the log gets its shadow entry (written from the log entry,
  replacing whatever was there), as do ``.meta/.superblock`` and ``.meta/.log``;
* a lookup that misses in the log consults the shadow tree: a directory there, or a YAML document
  whose extents pass the volume's checks (inside the device, clear of the superblock and log, no
  unit shared with a served file or another pending one), is served *provisionally* — under a node
  id of its own and with zero cache timeouts, so the kernel asks again once the entry lands;
* when the log entry lands, the provisional inode is compared with it: a match keeps serving the
  same bytes, a mismatch is named in the server's log and the provisional inode stops serving
  (the log's version is served under the log's node id);
* a provisional name that still has no log entry when its writer lets go of the volume lock
  (daxmode.famfs.mount.locks) is dropped, its shadow entry removed, with a line in the server's log.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable

from daxmode.famfs.media import layout as L
from daxmode.famfs.mount import shadowyaml as Y
from daxmode.famfs.mount.namespace import FIRST_ENTRY_ID, LOG_ID, META_DIR, Inode, Namespace

PENDING_BASE = 1 << 56
"""Node ids of provisional inodes (names in the shadow tree, not yet in the log)."""
SHADOW_XATTR = b"user.famfs.shadow"


def is_provisional(nodeid: int) -> bool:
    return nodeid >= PENDING_BASE


def _same_claim(a: L.FileMeta, b: L.FileMeta) -> bool:
    return (a.size, a.mode & 0o7777, a.uid, a.gid, a.ext_type, tuple(a.extents), a.nstrips, a.chunk_size) == (
        b.size, b.mode & 0o7777, b.uid, b.gid, b.ext_type, tuple(b.extents), b.nstrips, b.chunk_size,
    )  # fmt: skip


class ShadowNamespace(Namespace):
    """A :class:`Namespace` that mirrors itself into a famfs shadow tree and serves names that are
    in the shadow tree but not yet in the log (see the module docstring)."""

    def __init__(self, *args: object, shadow: str, log: Callable[[str], None], **kw: object) -> None:
        self.shadow = shadow
        self.shadow_root = os.path.join(shadow, "root")
        self._say = log
        self._new: list[Inode] = []
        self._pending: dict[str, Inode] = {}
        self._plock = threading.RLock()
        self._next_pending = PENDING_BASE
        self.dropped = 0
        self.mismatched = 0
        os.makedirs(self.shadow_root, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(self.shadow_root, META_DIR), mode=0o755, exist_ok=True)
        self._publish_region(".superblock", 0, L.SUPERBLOCK_REGION, 0o444)
        self._backlog: list[tuple[str, L.FileMeta]] | None = []
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.publish()
        backlog, self._backlog = self._backlog, None
        self.populated = threading.Event()
        threading.Thread(target=self._populate, args=(backlog,), name="famfs-shadow", daemon=True).start()

    def _populate(self, backlog: list[tuple[str, L.FileMeta]]) -> None:
        """The documents of the files played at mount time, written after the mount is up: a full
        log holds 15,420 of them, about a second of work, and nothing needs them at once (famfs's
        tools check names through the mount; directories, which they do need, were made first)."""
        try:
            for rel, meta in backlog:
                try:
                    self._write(rel, Y.emit(meta))
                except OSError as e:
                    self._say(f"shadow tree: cannot write {rel!r}: {e.strerror}")
        finally:
            self.populated.set()

    # --- the log's names into the shadow tree ---------------------------------------------------
    def _add(self, ino: Inode) -> Inode:
        if ino.nodeid >= FIRST_ENTRY_ID and not is_provisional(ino.nodeid):
            self._new.append(ino)
        elif ino.nodeid == LOG_ID and ino.region is not None:
            self._publish_region(".log", *ino.region, ino.perm)
        return super()._add(ino)

    def refresh(self) -> int:
        n = super().refresh()
        if self._new:
            self.publish()
        return n

    def _publish_region(self, name: str, off: int, length: int, mode: int) -> None:
        rel = f"{META_DIR}/{name}"
        self._write(rel, Y.emit(Y.region_meta(rel, off, length, mode)))

    def _write(self, rel: str, data: bytes) -> None:
        """Write in place, as famfs does (``famfs_shadow_file_create``): the document of a logged
        name is never read back by anyone but famfs's tools checking that it exists."""
        fd = os.open(
            os.path.join(self.shadow_root, rel),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def publish(self) -> None:
        """Write the shadow entries of everything played since the last call, and settle the
        provisional inodes those entries answer."""
        with self._plock:
            new, self._new = self._new, []
            for ino in new:
                rel = self.path_of(ino.nodeid)
                try:
                    if ino.is_dir:
                        self._mkdir(rel)
                    elif ino.meta is not None and self._backlog is not None:
                        self._backlog.append((rel, ino.meta._replace(path=rel)))
                    elif ino.meta is not None:
                        self._write(rel, Y.emit(ino.meta._replace(path=rel)))
                except OSError as e:
                    self._say(f"shadow tree: cannot write {rel!r}: {e.strerror}")
                self._answer_pending(rel, ino)

    def _mkdir(self, rel: str) -> None:
        path = os.path.join(self.shadow_root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            return
        if not stat.S_ISDIR(st.st_mode):  # a stale document where the log has a directory
            os.unlink(path)
            os.mkdir(path, 0o755)

    def _answer_pending(self, rel: str, ino: Inode) -> None:
        p = self._pending.pop(rel, None)
        if p is None:
            return
        if p.is_dir != ino.is_dir or (
            p.meta is not None and ino.meta is not None and not _same_claim(p.meta, ino.meta)
        ):
            self.mismatched += 1
            self._say(
                f"shadow tree: {rel!r}: the shadow file claimed {self._claim(p)} but the log entry says "
                f"{self._claim(ino)}; serving the log's"
            )
            self.inodes.pop(p.nodeid, None)

    @staticmethod
    def _claim(ino: Inode) -> str:
        if ino.is_dir:
            return "a directory"
        m = ino.meta
        assert m is not None
        return f"size {m.size}, mode {m.mode:#o}, extents {[(hex(o), hex(n)) for _d, o, n in m.extents]}"

    # --- names in the shadow tree but not yet in the log ------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Inode | None:
        ino = super().lookup(parent, name)
        if ino is not None:
            return ino
        p = self.get(parent)
        if p is None or p.children is None or not name or b"/" in name or name in (b".", b".."):
            return None
        prel = self.path_of(parent)
        rel = (
            f"{prel}/{name.decode('utf-8', 'surrogateescape')}"
            if prel
            else name.decode("utf-8", "surrogateescape")
        )
        if rel == META_DIR or rel.startswith(META_DIR + "/"):
            return None
        with self._plock:
            known = self._pending.get(rel)
            if known is not None and self.inodes.get(known.nodeid) is known:
                return known
            return self._provisional(parent, rel, name)

    def _provisional(self, parent: int, rel: str, name: bytes) -> Inode | None:
        why = L.check_relpath(rel, True)
        if why is not None:
            return None
        path = os.path.join(self.shadow_root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        nid = self._next_pending
        if stat.S_ISDIR(st.st_mode):
            ino = Inode(
                nid,
                stat.S_IFDIR,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                0,
                parent,
                name,
                children={},
            )
        elif stat.S_ISREG(st.st_mode):
            meta = self._read_claim(path, rel)
            if meta is None:
                return None
            ino = Inode(
                nid, stat.S_IFREG, meta.mode & 0o7777, meta.uid, meta.gid, meta.size, parent, name, meta=meta
            )
        else:
            return None
        self._next_pending += 1
        self.inodes[nid] = ino
        self._pending[rel] = ino
        return ino

    def _read_claim(self, path: str, rel: str) -> L.FileMeta | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                data = os.read(fd, Y.YAML_MAX + 1)
            finally:
                os.close(fd)
            meta = Y.parse(data)
        except (OSError, Y.ShadowYamlError) as e:
            self._say(f"shadow tree: {rel!r} is not served: {e}")
            return None
        if meta.path.strip("/") != rel:
            self._say(f"shadow tree: {rel!r} is not served: its document names {meta.path!r}")
            return None
        meta = meta._replace(path=rel)
        problems = self.claim_problems(meta)
        if problems:
            self._say(f"shadow tree: {rel!r} is not served: {problems[0]}")
            return None
        return meta

    def claim_problems(self, meta: L.FileMeta) -> list[str]:
        """Why a shadow file's extents may not be served: the volume's one extent validator
        (daxmode.famfs.media.extents: placement, exact interleave geometry, no unit of a logged
        file), and no unit shared with another provisional file."""
        v = self.validator
        if v is None:
            return ["the superblock has not been read yet"]
        out = ["size 0 (famfs creates no empty files)"] if meta.size <= 0 else []
        out += v.problems(meta)
        if out:
            return out
        mine = [(o, o + n) for _d, o, n in meta.extents]
        for other in list(self._pending.values()):
            m = other.meta
            if m is None or other.nodeid not in self.inodes:
                continue
            for _d, o, n in m.extents:
                for a, b in mine:
                    if a < o + n and o < b:
                        return [f"extent [{a:#x}, {b:#x}) overlaps the pending file {m.path!r}"]
        return []

    # --- the writer let go of the volume lock ------------------------------------------------------
    def pending_nodeids(self) -> list[int]:
        with self._plock:
            return [i.nodeid for i in self._pending.values() if not i.is_dir]

    def drop_unlogged(self) -> list[str]:
        """Drop every provisional name the log still lacks (its writer is done); returns them."""
        self.refresh()
        with self._plock:
            gone = sorted(self._pending, key=lambda r: -r.count("/"))
            for rel in gone:
                ino = self._pending.pop(rel)
                self.inodes.pop(ino.nodeid, None)
                self.dropped += 1
                path = os.path.join(self.shadow_root, rel)
                try:
                    if ino.is_dir:
                        os.rmdir(path)
                    else:
                        os.unlink(path)
                    removed = "removed"
                except OSError as e:
                    removed = f"not removed: {e.strerror}"
                self._say(
                    f"shadow tree: dropped {rel!r}: its {'directory' if ino.is_dir else 'YAML'} never got "
                    f"a log entry before its writer released the volume lock (shadow entry {removed})"
                )
        return gone

    def summary(self) -> dict[str, object]:
        d = super().summary()
        with self._plock:
            d["shadow"] = {"path": self.shadow, "pending": sorted(self._pending), "dropped": self.dropped,
                           "mismatched": self.mismatched}  # fmt: skip
        return d
