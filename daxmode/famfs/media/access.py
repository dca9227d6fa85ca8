"""Zero-copy access to famfs files from user space, without a famfs kernel.

On a stock kernel a famfs file's bytes are still plain memory on the device: open the device
(devdax, or fsdev switched to devdax for the session), play the log, and hand out views of the
mapping.  A file with one simple extent is one ``memoryview`` (NumPy: ``np.frombuffer(view)``,
Arrow: ``pa.py_buffer(view)``); multi-extent and interleaved files get a reader over their runs.

    with open_famfs("dax0.0") as fs:            # daxmode.famfs.medium.open_famfs
        f = fs.open("data/matrix.bin")
        arr = numpy.frombuffer(f.view(), dtype=numpy.float32)

Views are valid only inside the ``with`` block (the mapping is closed afterwards).  On memory
shared by hosts that are not cache-coherent, files are invalidated when opened (``invalidate``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

from daxmode.errors import FamfsError
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.volume import Volume

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer  # the type checker's name for any writable buffer


class FamfsFile:
    """One famfs file in a mapped volume."""

    def __init__(self, vol: Volume, meta: L.FileMeta, *, invalidate: bool = True) -> None:
        self.vol = vol
        self.meta = meta
        self.size = meta.size
        self.runs = vol.segments(meta)
        if invalidate:
            for dev, n in self.runs:
                vol.medium.sync.invalidate(vol.mv, dev, n)

    @property
    def path(self) -> str:
        return self.meta.path

    @property
    def contiguous(self) -> bool:
        return len(self.runs) <= 1

    def view(self) -> memoryview:
        """The whole file as one zero-copy view; only for files stored in one run."""
        if not self.runs:
            return memoryview(b"")
        if len(self.runs) > 1:
            raise FamfsError(
                f"{self.path}: stored in {len(self.runs)} runs "
                f"({'interleaved' if self.meta.interleaved else 'extents'});"
                " use .chunks(), .readinto() or .reader()"
            )
        dev, n = self.runs[0]
        return self.vol.mv[dev : dev + n]

    def chunks(self) -> Iterator[memoryview]:
        """Zero-copy views of each run, in file order."""
        for dev, n in self.runs:
            yield self.vol.mv[dev : dev + n]

    def readinto(self, buf: WriteableBuffer, offset: int = 0) -> int:
        """Copy file bytes starting at ``offset`` into ``buf``; returns bytes copied."""
        out = memoryview(buf).cast("B")
        want = min(len(out), max(self.size - offset, 0))
        pos = 0
        for dev, n in L.file_segments(self.meta, offset, want):
            out[pos : pos + n] = self.vol.mv[dev : dev + n]
            pos += n
        return pos

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        n = max(self.size - offset, 0) if length is None else min(length, max(self.size - offset, 0))
        buf = bytearray(n)
        self.readinto(buf, offset)
        return bytes(buf)

    def reader(self) -> io.BufferedReader:
        """A seekable binary file object over the famfs file."""
        return io.BufferedReader(_Raw(self), buffer_size=2 << 20)


class _Raw(io.RawIOBase):
    def __init__(self, f: FamfsFile) -> None:
        self.f = f
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer, /) -> int:
        n = self.f.readinto(b, self.pos)
        self.pos += n
        return n

    def seek(self, off: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.f.size}[whence]
        self.pos = max(base + off, 0)
        return self.pos

    def tell(self) -> int:
        return self.pos


class FamfsSession:
    """A played famfs volume whose files can be opened by path."""

    def __init__(self, vol: Volume) -> None:
        self.volume = vol

    def open(self, path: str, *, invalidate: bool = True) -> FamfsFile:
        return FamfsFile(self.volume, self.volume.lookup_file(path), invalidate=invalidate)

    def listdir(self, path: str = "") -> list[str]:
        node = self.volume.tree.lookup(path)
        if node is None or isinstance(node, L.FileMeta):
            raise FamfsError(f"{path}: not a famfs directory")
        return sorted(node.children)
