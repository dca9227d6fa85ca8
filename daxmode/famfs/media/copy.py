"""Copying local files into a famfs volume, and reading famfs files out: the logic behind
``daxmode famfs cp``, ``cat`` and ``read`` (the CLI only parses and prints)."""

from __future__ import annotations

import io
import os
import random
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from daxmode.errors import FamfsError, FamfsExists, FamfsNotFound, InvalidArgument
from daxmode.famfs.media.results import Copied
from daxmode.famfs.media.volume import Volume

_RUN = 8 << 20  # bytes per copy: large enough for memcpy speed, small enough to stay cache-friendly


def copy_in(
    vol: Volume,
    sources: list[str],
    dest: str,
    *,
    mode: int | None = None,
    uid: int = 0,
    gid: int = 0,
    overwrite: bool = False,
) -> Iterator[Copied]:
    """Copy each local file to ``dest`` (a famfs file, or a directory when it exists, ends in
    ``/`` or several sources are given); yields each file once it is on the media and logged.

    A new file is written before its log entry (:meth:`Volume.creat` with ``data``): a copy
    killed at any point leaves no file or the whole file.  An existing name is refused
    (FamfsExists) unless ``overwrite``; then a file of the same size is rewritten in place."""
    if not sources:
        raise InvalidArgument("cp needs at least one SRC and a DEST")
    dest_rel = dest.strip("/")
    into_dir = dest_rel == "" or dest_rel in vol.tree.dirs or dest.endswith("/") or len(sources) > 1
    if into_dir and dest_rel and dest_rel not in vol.tree.dirs:
        raise FamfsNotFound(f"{dest}: no such famfs directory")
    for src in sources:
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below, after the size check
        except OSError as e:
            raise InvalidArgument(f"{src}: cannot read: {e.strerror}") from None
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{src}: not a regular file")
            rel = f"{dest_rel}/{os.path.basename(src)}".strip("/") if into_dir else dest_rel
            fmode = mode if mode is not None else st.st_mode & 0o777
            have = vol.tree.files.get(rel)
            try:
                if have is not None and overwrite:
                    if have.size != st.st_size:
                        raise FamfsExists(
                            f"{rel}: exists with {have.size} bytes; famfs files never change size "
                            f"(source has {st.st_size})"
                        )
                    n = vol.write(have, f)
                    if n != st.st_size:
                        raise FamfsError(f"{src}: copied {n} of {st.st_size} bytes (changed while copying?)")
                elif have is not None or rel in vol.tree.dirs:
                    raise FamfsExists(f"{rel}: exists in famfs; use --overwrite to rewrite it in place")
                else:
                    vol.creat(rel, st.st_size, mode=fmode, uid=uid, gid=gid, data=f, exist_ok=False)
            except OSError as e:
                raise InvalidArgument(f"{src}: read failed: {e.strerror}") from None
        yield Copied(src, rel, st.st_size)


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
