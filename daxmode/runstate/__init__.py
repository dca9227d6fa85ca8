"""Everything daxmode keeps between runs, in one root-only directory: ``/run/daxmode``.

What lives there: the device, bus and region locks (:mod:`.locks`), the journal of a transition
in flight and the ``auto_online_blocks`` hold (:mod:`.journal`), the famfs mount servers'
records and logs (``mounts/``, :mod:`daxmode.famfs.mount.records`), what ``famfs up --no-mount``
replaced (``bringup/``, :mod:`daxmode.famfs.bringup`) and the FUSE probe's mount point.

This module owns the rules every one of them follows:

* the directory (and each subdirectory) is created 0700 and checked on every use: a real
  directory, not a symlink, owned by us, no group or other access; files in it are opened
  relative to it with ``O_NOFOLLOW``, so a user who prepared the path first cannot make root
  create or truncate files elsewhere, read daxmode's records or hold its locks;
* a record is replaced atomically (a temporary sibling written and ``fsync``\\ ed, then renamed
  over), so a reader never sees half of one, whenever the writer dies;
* a free-form key (a mount point) is %-quoted with nothing kept safe (:func:`key`): ``/a_b``
  and ``/a/b`` never share a file, and no key is ``.``, ``..`` or hidden.

``/run`` is a tmpfs: nothing here outlives a reboot, and neither does the kernel state it
describes.  The directory sits under the Sysfs root, so a simulated root has its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from typing import Any

from daxmode.errors import InvalidArgument, UnsafePath
from daxmode.sysfs import Sysfs

RUN_DIR = "run/daxmode"
"""Relative to the Sysfs root; created root-owned 0700 (:func:`open_run_dir`)."""

MAX_RECORD = 1 << 20
"""A record larger than this is not one daxmode wrote."""


def _check_dir(fd: int, shown: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{shown} is not a directory; remove it (daxmode keeps its state there)")
    if st.st_uid != os.geteuid():
        raise UnsafePath(
            f"{shown} is owned by uid {st.st_uid}, not {os.geteuid()}; someone else created it: remove it"
        )
    if st.st_mode & 0o077:
        raise UnsafePath(f"{shown} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 (chmod 0700 it)")


def _open_checked(name: str, shown: str, dir_fd: int | None = None) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{shown} is a symlink or not a directory; remove it") from None
        raise
    try:
        _check_dir(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


_checked: dict[str, tuple[int, int, int]] = {}  # run dir path -> (fd, st_dev, st_ino), checked


def open_run_dir(sysfs: Sysfs, create: bool = True) -> int:
    """A descriptor of the checked run directory (the caller closes it).

    The first use in a process creates and checks the directory; later uses only confirm, with
    one lstat, that the path still names the same directory (a transition opens it a dozen
    times, and each open, mkdir and check is a slow syscall in a TCG guest)."""
    path = sysfs.fspath(RUN_DIR)
    known = _checked.get(path)
    if known is not None:
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == known[1:] and stat.S_ISDIR(st.st_mode):
            return os.dup(known[0])
        _checked.pop(path, None)
        os.close(known[0])
    if create:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    fd = _open_checked(path, sysfs.shown(RUN_DIR))
    st = os.fstat(fd)
    _checked[path] = (os.dup(fd), st.st_dev, st.st_ino)
    return fd


def run_dir(sysfs: Sysfs, sub: str | None = None) -> str:
    """The path of the checked run directory (or of its checked subdirectory ``sub``), created
    0700 if missing: for what must be named by path (a socket, a mount point, a log a child
    process opens).  UnsafePath if someone else prepared it."""
    if sub is None:
        os.close(open_run_dir(sysfs))
        return sysfs.fspath(RUN_DIR)
    os.close(open_subdir(sysfs, sub))
    return sysfs.fspath(f"{RUN_DIR}/{sub}")


def open_subdir(sysfs: Sysfs, sub: str, create: bool = True) -> int:
    """A descriptor of ``run/daxmode/<sub>``, created 0700 and checked like the run directory."""
    dfd = open_run_dir(sysfs, create=create)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o700, dir_fd=dfd)
        return _open_checked(sub, sysfs.shown(f"{RUN_DIR}/{sub}"), dir_fd=dfd)
    finally:
        os.close(dfd)


def open_in_run_dir(sysfs: Sysfs, name: str, flags: int, mode: int = 0o600) -> int:
    """Open ``run/daxmode/<name>`` without following symlinks, relative to the checked directory."""
    dfd = open_run_dir(sysfs, create=bool(flags & os.O_CREAT))
    try:
        return _open_at(dfd, name, flags, mode, sysfs.shown(f"{RUN_DIR}/{name}"))
    finally:
        os.close(dfd)


def _open_at(dfd: int, name: str, flags: int, mode: int, shown: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"{shown} is a symlink; remove it") from None
        raise


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def key(text: str) -> str:
    """The one file-name encoding of a free-form key: every byte but ``[A-Za-z0-9_.~-]`` %-quoted
    (``/`` and ``%`` included, so it is injective), a leading ``.`` too (no hidden or dot names)."""
    if text and text[0] != "." and len(text) <= 240 and _SAFE.issuperset(text):
        return text  # a device name: what quote() would give, without importing urllib at start-up
    import urllib.parse

    if not text:
        raise InvalidArgument("an empty key names no run-state record")
    out = urllib.parse.quote(text, safe="")
    if out.startswith("."):
        out = "%2E" + out[1:]
    if len(out) > 240:  # NAME_MAX is 255, with room for a suffix
        raise InvalidArgument(f"{text[:60]}...: too long to name a run-state record ({len(out)} bytes)")
    return out


def unkey(name: str) -> str:
    import urllib.parse

    return urllib.parse.unquote(name)


# --- atomic files ------------------------------------------------------------------------------
def write_at(dfd: int, name: str, data: bytes, shown: str) -> None:
    """Replace ``name`` in the directory ``dfd`` atomically: a temporary sibling, written and
    fsynced, renamed over it."""
    tmp = f".{name}.{os.getpid()}.{threading.get_ident()}"
    fd = _open_at(dfd, tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, shown)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    os.close(fd)
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def read_at(dfd: int, name: str, shown: str) -> bytes | None:
    """The file's bytes, or None if it is missing (or not a regular file we may read)."""
    try:
        fd = _open_at(dfd, name, os.O_RDONLY, 0, shown)
    except FileNotFoundError:
        return None
    except (OSError, UnsafePath):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_RECORD)
    finally:
        os.close(fd)


def remove_at(dfd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dfd)


def decode(raw: bytes) -> dict[str, Any] | None:
    """A record's JSON object; None for anything else (a record is never trusted beyond that)."""
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def encode(data: dict[str, Any]) -> bytes:
    import json

    return json.dumps(data, sort_keys=True, indent=1).encode()


class Records:
    """JSON records in one checked subdirectory of the run directory, one file per key."""

    def __init__(self, sub: str) -> None:
        self.sub = sub

    def _shown(self, sysfs: Sysfs, name: str = "") -> str:
        return sysfs.shown(f"{RUN_DIR}/{self.sub}/{name}".rstrip("/"))

    def path(self, sysfs: Sysfs, name: str, suffix: str = ".json") -> str:
        """The path of ``name``'s file with ``suffix`` (for files a child process opens by path)."""
        return sysfs.fspath(f"{RUN_DIR}/{self.sub}/{key(name)}{suffix}")

    def save(self, sysfs: Sysfs, name: str, data: dict[str, Any]) -> None:
        dfd = open_subdir(sysfs, self.sub)
        try:
            write_at(dfd, f"{key(name)}.json", encode(data), self._shown(sysfs, f"{key(name)}.json"))
        finally:
            os.close(dfd)

    def _open(self, sysfs: Sysfs) -> int | None:
        try:
            return open_subdir(sysfs, self.sub, create=False)
        except (OSError, UnsafePath):
            return None  # missing, not root (the directory is 0700), or not ours: nothing to trust

    def load(self, sysfs: Sysfs, name: str) -> dict[str, Any] | None:
        dfd = self._open(sysfs)
        if dfd is None:
            return None
        try:
            raw = read_at(dfd, f"{key(name)}.json", self._shown(sysfs, name))
        finally:
            os.close(dfd)
        return None if raw is None else decode(raw)

    def remove(self, sysfs: Sysfs, name: str) -> None:
        dfd = self._open(sysfs)
        if dfd is None:
            return
        try:
            remove_at(dfd, f"{key(name)}.json")
        finally:
            os.close(dfd)

    def all(self, sysfs: Sysfs) -> list[dict[str, Any]]:
        """Every record that decodes, in key order."""
        dfd = self._open(sysfs)
        if dfd is None:
            return []
        try:
            names = sorted(n for n in os.listdir(dfd) if n.endswith(".json") and not n.startswith("."))
            raws = [read_at(dfd, n, self._shown(sysfs, n)) for n in names]
        finally:
            os.close(dfd)
        return [d for r in raws if r is not None and (d := decode(r)) is not None]
