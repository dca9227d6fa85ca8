"""Crash consistency of ``famfs cp`` and ``famfs creat -r``: killed at any point, the volume has no
such file or the whole file, fsck stays clean, and no space leaks.

Each trial runs the real CLI and sends SIGINT, SIGTERM or SIGKILL: half at a uniformly random
time over the whole run, half while the data is being written (the test watches the extent the
allocator will hand out, which it zeroes first, and strikes a random moment after the first data
byte lands).  After every trial: fsck of the image, the file absent or byte-identical, a
reported success on the media, and the next allocation reusing the space of a killed one."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daxmode.famfs import Volume, mkfs
from daxmode.famfs.media.copy import seeded_bytes
from daxmode.famfs.media.fsck import fsck
from daxmode.famfs.media.identity import ensure_system_uuid
from daxmode.fsdev import create_image, map_image
from daxmode.sysfs import Sysfs

MiB = 1 << 20
SIZE = 24 * MiB
TRIALS = 32  # per command: 64 kills in all
DAXMODE = str(Path(sys.executable).parent / "daxmode")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


class Rig:
    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.root.mkdir()
        self.me = ensure_system_uuid(Sysfs(self.root))
        self.img = base / "vol.img"
        create_image(self.img, 1 << 30)
        with map_image(self.img) as m:
            mkfs(m, self.me)
        self.src = base / "src.bin"
        self.data = os.urandom(SIZE)
        self.src.write_bytes(self.data)

    def next_offset(self) -> int:
        """Where the next contiguous file will go (the CLI's allocator starts from the same log)."""
        with map_image(self.img) as m, Volume(m, self.me) as v:
            return v.allocator.contiguous(SIZE)[1]

    def argv(self, kind: str, name: str, seed: int) -> list[str]:
        if kind == "cp":
            return [DAXMODE, "--root", str(self.root), "famfs", "cp", str(self.img), str(self.src), name]
        return [DAXMODE, "--root", str(self.root), "famfs", "creat", str(self.img), name,
                "-s", str(SIZE), "-r", "-S", str(seed)]  # fmt: skip

    def first_bytes(self, off: int) -> bytes:
        with open(self.img, "rb") as f:
            return os.pread(f.fileno(), 4096, off)

    def zero(self, off: int) -> None:
        with open(self.img, "r+b") as f:
            os.pwrite(f.fileno(), bytes(4096), off)


def _timed_run(rig: Rig, kind: str) -> float:
    t0 = time.monotonic()
    subprocess.run(rig.argv(kind, f"warm-{kind}", 1), check=True, capture_output=True)
    return time.monotonic() - t0


@pytest.mark.parametrize("kind", ["cp", "creat"])
def test_kill_at_random_points(kind: str, tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rnd = random.Random(f"kill-{kind}")
    total = _timed_run(rig, kind)
    outcomes = {"absent": 0, "whole": 0, "reported": 0}
    for k in range(TRIALS):
        name, seed = f"f{k}", 1000 + k
        want = rig.data if kind == "cp" else seeded_bytes(SIZE, seed)
        off = rig.next_offset()
        rig.zero(off)
        sig = SIGNALS[k % 3]
        p = subprocess.Popen(rig.argv(kind, name, seed), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if k % 2:  # strike while the data is being written
            deadline = time.monotonic() + 30
            while rig.first_bytes(off)[:8] == bytes(8) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rnd.uniform(0, 0.05))
        else:
            time.sleep(rnd.uniform(0, total * 1.5))
        if p.poll() is None:
            p.send_signal(sig)
        p.communicate(timeout=60)
        with map_image(rig.img) as m:
            rep = fsck(m.buf, m.size)
            assert rep.problems == [], (k, rep.problems)
            with Volume(m, rig.me) as v:
                meta = v.tree.files.get(name)
                if p.returncode == 0:
                    outcomes["reported"] += 1
                    assert meta is not None, (k, "success reported, file not on the media")
                if meta is None:
                    outcomes["absent"] += 1
                    # nothing leaked: the next allocation takes the killed file's space again
                    assert v.allocator.contiguous(SIZE)[1] == off, k
                else:
                    outcomes["whole"] += 1
                    got = v.read(meta)
                    assert (
                        meta.size == SIZE and hashlib.sha256(got).digest() == hashlib.sha256(want).digest()
                    ), k
    # the kills did land on both sides of the commit
    assert outcomes["absent"] >= 2 and outcomes["whole"] >= 2, outcomes
    print(f"{kind}: {TRIALS} kills: {outcomes}")


class _Breaks:
    """A source that raises after ``after`` bytes (Ctrl-C, or a read error, mid-copy)."""

    def __init__(self, data: bytes, after: int, exc: BaseException) -> None:
        self.data, self.pos, self.after, self.exc = data, 0, after, exc

    def readinto(self, b: memoryview) -> int:
        if self.pos >= self.after:
            raise self.exc
        n = min(len(b), self.after - self.pos, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("after", [0, 1, 2 * MiB, 5 * MiB + 3, 8 * MiB - 1])
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(5, "Input/output error")])
def test_interrupted_data_write_leaves_no_entry(after: int, exc: BaseException, tmp_path: Path) -> None:
    create_image(tmp_path / "v.img", 256 * MiB)
    me = ensure_system_uuid(Sysfs(tmp_path))
    with map_image(tmp_path / "v.img") as m:
        mkfs(m, me)
        with Volume(m, me) as v:
            n0, off0 = v.next_index, v.allocator.contiguous(8 * MiB)[1]
            v.reload()
            with pytest.raises(type(exc)):
                v.creat("x", 8 * MiB, data=_Breaks(os.urandom(8 * MiB), after, exc))  # type: ignore[arg-type]
            assert v.next_index == n0 and "x" not in v.tree.files
            meta, _ = v.creat("y", 8 * MiB, data=_Breaks(b"y" * 8 * MiB, 8 * MiB, exc))  # type: ignore[arg-type]
            assert meta.extents[0][1] == off0 and v.read(meta) == b"y" * 8 * MiB
        assert fsck(m.buf, m.size).problems == []
