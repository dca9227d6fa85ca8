"""Helpers shared by the FUSE tests (the kernel's side of the protocol, famfs test volumes)."""

from __future__ import annotations

import os
import uuid

from daxmode.famfs import Volume
from daxmode.famfs.media import layout as L
from daxmode.fsdev import Mapping

MiB = 1 << 20
ME = uuid.UUID("11111111-2222-4333-8444-555555555555")


def log_view(m: Mapping, log_len: int = L.DEFAULT_LOG_LEN) -> memoryview:
    return memoryview(m.buf)[L.LOG_OFFSET : L.LOG_OFFSET + log_len]


def populate(v: Volume) -> dict[str, bytes]:
    """d/ (0755), d/a.bin (3 MiB + 17, 0644), priv/ (0700 uid 1000), priv/s (0600 uid 1000), il.bin."""
    out = {}
    v.mkdir("d")
    v.mkdir("priv", mode=0o700, uid=1000, gid=1000)
    data = os.urandom(3 * MiB + 17)
    meta, _ = v.creat("d/a.bin", len(data))
    v.write(meta, data)
    out["d/a.bin"] = data
    meta, _ = v.creat("priv/s", 5000, mode=0o600, uid=1000, gid=1000)
    v.write(meta, b"s" * 5000)
    out["priv/s"] = b"s" * 5000
    il = os.urandom(9 * MiB + 5)
    meta, _ = v.creat("il.bin", len(il), nstrips=2, chunk=2 * MiB, nbuckets=2, min_bucket=2 * MiB)
    v.write(meta, il)
    out["il.bin"] = il
    return out
