"""The native cache write-back helper and its clean fallback."""

from __future__ import annotations

import builtins
import mmap

import pytest

from daxmode import cacheflush


def test_native_flush_runs_on_a_shared_mapping() -> None:
    n = cacheflush.native()
    if n is None:
        pytest.skip("daxmode._cacheflush is not built here")
    assert n.name.split("/")[0] in ("clwb", "clflushopt", "clflush", "none")
    m = mmap.mmap(-1, 1 << 20)
    m[100:105] = b"hello"
    n.writeback(m, 0, 1 << 20)
    n.invalidate(m, 100, 5)
    n.fence()
    assert m[100:105] == b"hello"  # flushing never changes contents
    with pytest.raises(ValueError, match="outside the buffer"):
        n.writeback(m, (1 << 20) - 4, 8)
    m.close()


def test_missing_module_falls_back_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_native(name, globals=None, locals=None, fromlist=(), level=0):  # type: ignore[no-untyped-def]
        if fromlist and "_cacheflush" in fromlist:
            raise ImportError("simulated: not built")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_native)
    s = cacheflush.get()
    assert isinstance(s, cacheflush.NoSync) and "not built" in s.name and "cache-coherently" in s.name
    s.writeback(b"", 0, 0)


def test_flush_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAXMODE_NO_CACHEFLUSH", "1")
    assert "DAXMODE_NO_CACHEFLUSH" in cacheflush.get().name
