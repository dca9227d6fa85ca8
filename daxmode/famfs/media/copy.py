"""Copying local files into a famfs volume, and reading famfs files out: the logic behind
``daxmode famfs cp``, ``cat`` and ``read`` (the CLI only parses and prints)."""

from __future__ import annotations

import io
import os
import random
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from daxmode.errors import DaxmodeError, FamfsError, FamfsExists, FamfsNotFound, InvalidArgument
from daxmode.famfs.media.results import Copied
from daxmode.famfs.media.volume import ReadsInto, Volume

_RUN = 8 << 20  # bytes per copy: large enough for memcpy speed, small enough to stay cache-friendly


@dataclass(frozen=True)
class Failed:
    """A source that was not copied; the copy goes on with the next one (as famfs cp does)."""

    source: str
    error: DaxmodeError

    @property
    def why(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Striping:
    """famfs's interleave parameters for new files (cp/creat ``-N -B -C``); nstrips 0: contiguous."""

    nstrips: int = 0
    chunk: int = 0
    nbuckets: int | None = None
    min_bucket: int | None = None


Progress = Callable[[str, int, int], None]
"""Called as (source, bytes copied so far, its size) while a file is copied."""


class _Counting:
    """A source file that reports how far the copy has read it."""

    def __init__(self, f: ReadsInto, name: str, total: int, progress: Progress) -> None:
        self.f, self.name, self.total, self.progress, self.done = f, name, total, progress, 0

    def readinto(self, b: memoryview, /) -> int:
        n = self.f.readinto(b) or 0
        self.done += n
        self.progress(self.name, self.done, self.total)
        return n


def _copy_file(
    vol: Volume,
    src: str,
    rel: str,
    mode: int | None,
    uid: int,
    gid: int,
    stripe: Striping,
    progress: Progress | None,
    overwrite: bool,
) -> Copied:
    try:
        f = open(src, "rb")  # noqa: SIM115 - closed below, after the size check
    except OSError as e:
        raise InvalidArgument(f"{src}: cannot read: {e.strerror}") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{src}: not a regular file")
        fmode = mode if mode is not None else st.st_mode & 0o777
        stream: ReadsInto = f if progress is None else _Counting(f, src, st.st_size, progress)
        have = vol.tree.files.get(rel)
        try:
            if have is not None and overwrite:
                if have.size != st.st_size:
                    raise FamfsExists(
                        f"{rel}: exists with {have.size} bytes; famfs files never change size "
                        f"(source has {st.st_size})"
                    )
                n = vol.write(have, stream)
                if n != st.st_size:
                    raise FamfsError(f"{src}: copied {n} of {st.st_size} bytes (changed while copying?)")
            elif have is not None or rel in vol.tree.dirs:
                raise FamfsExists(f"{rel}: exists in famfs; use --overwrite to rewrite it in place")
            else:  # data before the entry (Volume.creat with data): killed, no file or the whole file
                vol.creat(
                    rel, st.st_size, mode=fmode, uid=uid, gid=gid, nstrips=stripe.nstrips, chunk=stripe.chunk,
                    nbuckets=stripe.nbuckets, min_bucket=stripe.min_bucket, data=stream, exist_ok=False,
                )  # fmt: skip
        except OSError as e:
            raise InvalidArgument(f"{src}: read failed: {e.strerror}") from None
    return Copied(src, rel, st.st_size)


def copy_in(
    vol: Volume,
    sources: list[str],
    dest: str,
    *,
    mode: int | None = None,
    uid: int = 0,
    gid: int = 0,
    recursive: bool = False,
    stripe: Striping | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Iterator[Copied | Failed]:
    """Copy each local file to ``dest`` (a famfs file, or a directory when it exists, ends in
    ``/``, several sources are given or ``recursive``); yields each file as it is on the media, or
    why a source was not copied, and goes on with the next source.

    As famfs ``cp -r`` (``famfs_cp_dir``, ``src/famfs_lib.c:4936``): a source directory's *contents*
    go into ``dest`` (made if missing, with the source directory's mode), subdirectories into
    ``dest/<name>``; without ``recursive`` a directory is skipped as a failure.  A new file is written
    before its log entry (no file or the whole file if killed); an existing name is refused
    (FamfsExists) unless ``overwrite``, and then a file of the same size is rewritten in place."""
    if not sources:
        raise InvalidArgument("cp needs at least one SRC and a DEST")
    stripe = stripe or Striping()
    dest_rel = dest.strip("/")
    into_dir = (
        dest_rel == "" or dest_rel in vol.tree.dirs or dest.endswith("/") or len(sources) > 1 or recursive
    )
    if into_dir and dest_rel and dest_rel not in vol.tree.dirs and not recursive:
        raise FamfsNotFound(f"{dest}: no such famfs directory")
    if into_dir and dest_rel in vol.tree.files:
        raise FamfsExists(f"{dest}: exists and is not a directory")

    def one(src: str, rel: str) -> Iterator[Copied | Failed]:
        try:
            yield _copy_file(vol, src, rel, mode, uid, gid, stripe, progress, overwrite)
        except DaxmodeError as e:
            yield Failed(src, e)

    def tree(src: str, rel: str) -> Iterator[Copied | Failed]:
        try:
            if rel and rel not in vol.tree.dirs:
                vol.mkdir(rel, mode=os.stat(src).st_mode & 0o777, uid=uid, gid=gid)
            names = sorted(os.listdir(src))
        except DaxmodeError as e:
            yield Failed(src, e)
            return
        except OSError as e:
            yield Failed(src, InvalidArgument(f"{src}: {e.strerror}"))
            return
        for name in names:
            path = os.path.join(src, name)
            sub = f"{rel}/{name}".strip("/")
            if os.path.isdir(path) and not os.path.islink(path):
                yield from tree(path, sub)
            else:
                yield from one(path, sub)

    for src in sources:
        if os.path.isdir(src):
            if recursive:
                yield from tree(src, dest_rel)
            else:
                yield Failed(src, InvalidArgument(f"{src}: is a directory (use -r to copy directories)"))
            continue
        rel = f"{dest_rel}/{os.path.basename(src)}".strip("/") if into_dir else dest_rel
        yield from one(src, rel)


def read_out(vol: Volume, path: str, out: BinaryIO, offset: int = 0, length: int | None = None) -> int:
    """Write the file's bytes from ``offset`` (at most ``length``) to ``out``; returns the count.
    The cache lines are invalidated first, so another host's writes are seen."""
    if offset < 0 or (length is not None and length < 0):
        raise InvalidArgument("offset and length must not be negative")
    meta = vol.lookup_file(path)
    if offset > meta.size:
        raise InvalidArgument(f"{path}: offset {offset} is past the end of the file ({meta.size} bytes)")
    total = 0
    for dev, n in vol.segments(meta, offset, length):
        vol.medium.sync.invalidate(vol.mv, dev, n)
        for pos in range(0, n, _RUN):
            total += out.write(vol.mv[dev + pos : dev + min(n, pos + _RUN)]) or 0
    out.flush()
    return total


class SeededBytes(io.RawIOBase):
    """``size`` pseudo-random bytes from ``seed`` (famfs ``creat -r -S``): the same seed gives the
    same bytes whatever the read sizes, so a file can be checked later with :func:`seeded_bytes`."""

    BLOCK = 1 << 20

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        self.left = size
        self.rng = random.Random(seed)
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        n = min(len(mv), self.left)
        pos = 0
        while pos < n:
            if not self.buf:
                self.buf = self.rng.randbytes(min(self.BLOCK, self.left - pos))
            k = min(n - pos, len(self.buf))
            mv[pos : pos + k] = self.buf[:k]
            self.buf = self.buf[k:]
            pos += k
        self.left -= n
        return n


def seeded_bytes(size: int, seed: int) -> bytes:
    """All the bytes :class:`SeededBytes` gives for ``size`` and ``seed``."""
    return SeededBytes(size, seed).read()
