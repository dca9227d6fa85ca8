"""What a suite path means, and the host-side preparation that keeps guest runs fast.

``tests/vm`` is two parts: tests/vm/guest runs under pytest inside each guest, tests/vm/test_*.py
runs on the host against the booted guests.  Guest tests run in two stages: first on every guest
at once (their kernel state is their own), then the ones marked ``shared_media`` (they write the
shared device's contents) one guest after the other.  Undeclared writers are caught: the harness
compares a digest of the shared backing file across the parallel stage.

Byte-compiling happens once, on the host, where it is ~50x faster than in a TCG guest: the
project's modules into their ``__pycache__`` (the guests read them over 9p, which keeps mtimes),
and pytest's assertion-rewritten test modules by a host-side ``--collect-only`` of the guest
suite (pytest 8+ validates those by source hash, and reads them on a read-only tree too).
"""

from __future__ import annotations

import compileall
import contextlib
import os
import subprocess
import time
import zlib
from pathlib import Path

from mhd.host.errors import BadInput

COMPILE_DIRS = ("daxmode", "mhd", "tests", "qemu", "bench")


def split_suite(suite: str, project: Path) -> tuple[list[str], list[str]]:
    """A suite path -> (guest test paths, host-side test paths), relative to the project.

    ``tests/vm`` means both: everything under tests/vm/guest runs in each guest, tests/vm/test_*.py
    runs on the host against the booted guests.  A path inside tests/vm/guest is guest-only; any
    other file is host-side.
    """
    p = (project / suite).resolve() if not os.path.isabs(suite) else Path(suite).resolve()
    if not p.exists():
        raise BadInput(f"suite {suite}: no such file or directory")
    rel = os.path.relpath(p, project)
    if rel.startswith(".."):
        raise BadInput(f"suite {suite}: must be inside the project {project}")
    guest_dir = project / "tests" / "vm" / "guest"
    if p == guest_dir or guest_dir in p.parents:
        return [rel], []
    if p.is_dir():
        guest = [os.path.relpath(guest_dir, project)] if guest_dir.is_dir() and p in guest_dir.parents else []
        host = sorted(os.path.relpath(f, project) for f in p.glob("test_*.py"))
        return guest, host
    return [], [rel]


def compile_project(project: Path, dirs: tuple[str, ...] = COMPILE_DIRS) -> float:
    """Byte-compile the project's sources into their __pycache__ (up-to-date ones are skipped); seconds.

    A file that does not compile is left to the test run to report, not the harness.
    """
    t0 = time.monotonic()
    for d in dirs:
        path = project / d
        if path.is_dir():
            compileall.compile_dir(str(path), quiet=2)
    return time.monotonic() - t0


GUEST_PYTEST_OFF = ("no:cacheprovider", "no:hypothesispytest")
"""Plugins the guest suite runs without: the cache (the tree is not the guest's to write), and
hypothesis's, which imports all of hypothesis at the end of every session (0.16 s here, ~8 s under
TCG) though no guest test uses hypothesis; a test that does still runs, without the plugin's
reporting."""


def pytest_argv(python: str, project: str, paths: list[str], junit: str, markexpr: str | None) -> list[str]:
    """The guest suite's pytest command (run by the agent, which forks it warm)."""
    argv = [python, "-m", "pytest", *(x for p in GUEST_PYTEST_OFF for x in ("-p", p))]
    argv += [
        "-q", "-rfEs",
        "-o", "junit_family=xunit1", "--durations=10", f"--junitxml={junit}", "--rootdir", project,
    ]  # fmt: skip
    if markexpr:
        argv += ["-m", markexpr]
    return argv + list(paths)


def host_collect(python: Path, project: Path, paths: list[str], timeout: float = 300) -> float:
    """Collect the guest suite on the host, which writes the assertion-rewrite caches the guests
    read (~1 s here against seconds per guest run under TCG); returns its seconds.  Whether the
    collection works is the guests' run to report."""
    t0 = time.monotonic()
    argv = [str(python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, cwd=project, env=env, capture_output=True, timeout=timeout)
    return time.monotonic() - t0


def media_digest(path: Path) -> str:
    """Checksum of the shared backing file (a guest suite must not change it in the parallel stage).

    CRC32 detects any accidental change (this guards against mistakes, not adversaries) at
    ~2.5 GB/s here, against ~0.7 GB/s for SHA-1: 0.2 s for a 512 MiB device.
    """
    crc = 0
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return f"{size}:{crc:08x}"
