"""Cache write-back and invalidation for famfs metadata and data on shared memory.

When it matters: hosts that share memory *without* hardware cache coherency between them (for
example separate machines attached to one multi-headed CXL memory device without coherent
sharing).  A writer's stores may sit in its CPU cache, and a reader may hold stale lines, so the
writer must write back (CLWB/CLFLUSHOPT/CLFLUSH + SFENCE) after writing and the reader must
invalidate before reading.  It does not matter on one host, or for QEMU VMs whose shared
"CXL" memory is host RAM: all vCPUs run on the host's coherent caches.

The instructions come from the small native module :mod:`daxmode._cacheflush`, built by
``pip install`` (setup.py).  Without it, :func:`get` returns a no-op syncer that says why, so
tools keep working on coherent set-ups and report the limitation instead of failing.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class CacheSync(Protocol):
    name: str
    """What this syncer does, for status output (e.g. "clwb+sfence")."""

    def writeback(self, buf: object, off: int, length: int) -> None: ...

    def invalidate(self, buf: object, off: int, length: int) -> None: ...

    def fence(self) -> None: ...


class NoSync:
    """For memory that is coherent for every reader (image files, one host, VMs on one host)."""

    def __init__(self, why: str = "not needed: memory is cache-coherent for all readers") -> None:
        self.name = f"none ({why})"

    def writeback(self, buf: object, off: int, length: int) -> None:
        return None

    def invalidate(self, buf: object, off: int, length: int) -> None:
        return None

    def fence(self) -> None:
        return None


class NativeSync:
    """CPU cache-line write-back/invalidate through daxmode._cacheflush."""

    def __init__(self, mod: ModuleType) -> None:
        self._mod = mod
        wb, inv, line = mod.methods()
        self.name = f"{wb}/{inv}+sfence, {line}-byte lines"
        self.writeback = mod.writeback
        self.invalidate = mod.invalidate
        self.fence = mod.fence


MISSING_MESSAGE = (
    "daxmode._cacheflush is not built (reinstall with `pip install -e .` and a C compiler); "
    "famfs writes are safe only where hosts share memory cache-coherently"
)


def native() -> NativeSync | None:
    try:
        from daxmode import _cacheflush
    except ImportError:
        return None
    return NativeSync(_cacheflush)


def get() -> CacheSync:
    """The syncer for real dax devices: native if built, else a no-op that carries the reason.

    ``DAXMODE_NO_CACHEFLUSH=1`` disables flushing (for measuring its cost)."""
    if os.environ.get("DAXMODE_NO_CACHEFLUSH") == "1":
        return NoSync("disabled by DAXMODE_NO_CACHEFLUSH=1")
    n = native()
    return n if n is not None else NoSync(MISSING_MESSAGE)
