"""famfs metadata across processes: concurrent writers on one image, and writers killed at random.

Writers are forked children (each opens the image itself, so each has its own open file
description and its own flock), or real ``daxmode famfs creat`` processes.  Every check reads the
result back from the log with a fresh session and with fsck, never from the writers' output alone.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from daxmode.cacheflush import NoSync
from daxmode.errors import DeviceBusy, FamfsError
from daxmode.famfs import Volume, fsck, mkfs
from daxmode.famfs.media.volume import Reformatted
from daxmode.fsdev import create_image, map_image

MiB = 1 << 20
GiB = 1 << 30


def fork(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a child process; it exits 0 if ``fn`` returned, 1 if it raised."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_all(pids: list[int]) -> dict[int, int]:
    """pid -> exit status (negative: killed by that signal)."""
    out = {}
    for pid in pids:
        _, st = os.waitpid(pid, 0)
        out[pid] = os.waitstatus_to_exitcode(st)
    return out


def drain(fd: int) -> list[str]:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return b"".join(chunks).decode().splitlines()


def played(image: Path) -> tuple[dict[str, int], set[str], list[str], list[str]]:
    """A fresh session's view: files (path -> size), directories, fsck problems, fsck notes."""
    with map_image(image, writable=False) as m:
        v = Volume(m, None)
        try:
            files = {p: f.size for p, f in v.tree.files.items()}
            dirs = set(v.tree.dirs)
            assert not v.scan.bad and not v.scan.header_problems and not v.tree.errors
        finally:
            v.close()
        rep = fsck(m.buf)
    return files, dirs, rep.problems, rep.notes


@pytest.fixture
def fs_image(tmp_path: Path, me: uuid.UUID) -> Path:
    p = tmp_path / "shared.img"
    create_image(p, 8 * GiB)  # sparse; room for thousands of 2 MiB files
    with map_image(p) as m:
        mkfs(m, me)
    return p


# --------------------------------------------------------------------------- concurrent writers


def test_concurrent_writers_lose_nothing(fs_image: Path, me: uuid.UUID) -> None:
    """8 processes open the volume, wait at a barrier, then each logs 6 files and 1 directory.

    Each has read the log before the others wrote (the view a CLI process has when it starts):
    every decision must still come from the log as it is under the lock."""
    nproc, nfiles = 8, 6
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    outs = []
    pids = []
    for w in range(nproc):
        r, wfd = os.pipe()

        def writer(w: int = w, wfd: int = wfd) -> None:
            os.close(go_w)
            os.close(ready_r)
            with map_image(fs_image) as m:
                v = Volume(m, me)
                os.write(ready_w, b".")
                os.read(go_r, 1)  # barrier: everyone has played the (empty) log
                for j in range(nfiles):
                    size = (j % 3 + 1) * MiB + w
                    _f, created = v.creat(f"w{w}-f{j}", size)
                    assert created
                    os.write(wfd, f"file w{w}-f{j} {size}\n".encode())
                v.mkdir(f"d{w}")
                os.write(wfd, f"dir d{w} 0\n".encode())
                v.close()

        pids.append(fork(writer))
        os.close(wfd)
        outs.append(r)
    os.close(ready_w)
    os.close(go_r)
    for _ in range(nproc):
        assert os.read(ready_r, 1) == b"."
    os.write(go_w, b"x" * nproc)
    os.close(go_w)
    status = wait_all(pids)
    lines = [ln for fd in outs for ln in drain(fd)]
    assert all(rc == 0 for rc in status.values()), status
    files, dirs, problems, _notes = played(fs_image)
    want_files = {p: int(s) for k, p, s in (ln.split() for ln in lines) if k == "file"}
    want_dirs = {p for k, p, _s in (ln.split() for ln in lines) if k == "dir"}
    assert len(want_files) == nproc * nfiles and len(want_dirs) == nproc
    assert files == want_files  # no entry lost, none overwritten
    assert dirs == want_dirs
    assert problems == []


def test_concurrent_cli_creat(tmp_path: Path) -> None:
    """The issue's reproduction: 8 ``daxmode famfs creat`` processes at once on one image."""
    root = tmp_path / "root"
    root.mkdir()
    img = tmp_path / "cli.img"
    create_image(img, 1 * GiB)
    daxmode = [sys.executable, "-m", "daxmode", "--root", str(root), "famfs"]
    subprocess.run([*daxmode, "mkfs", str(img)], check=True, capture_output=True)
    procs = [
        subprocess.Popen(
            [*daxmode, "creat", str(img), f"f{i}", "-s", f"{i + 1}M"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    files, _dirs, problems, _notes = played(img)
    assert files == {f"f{i}": (i + 1) * MiB for i in range(8)}
    assert problems == []


# --------------------------------------------------------------------------- SIGKILL at random points


class SlowSync(NoSync):
    """Write-back that takes a while, as flushing real shared memory does: it widens the window
    between an entry and its commit, so random kills land inside appends far more often."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__("test: slow write-back")
        self.rng = rng

    def writeback(self, buf: object, off: int, length: int) -> None:
        time.sleep(self.rng.uniform(0, 0.0015))


def _kill_writer(image: Path, me: uuid.UUID, tag: str, seed: int, out_fd: int, slow: bool) -> None:
    """Say "ready" once the log is played, then append until killed (at most 2,000 times),
    reporting each append only after it returned."""
    rng = random.Random(seed)
    with map_image(image) as m:
        if slow:
            m.sync = SlowSync(rng)
        v = Volume(m, me)
        os.write(out_fd, b"ready\n")
        for j in range(2000):
            path = f"{tag}-{j}"
            if rng.random() < 0.6:
                v.mkdir(path)
                os.write(out_fd, f"dir {path} 0\n".encode())
            else:
                size = rng.randrange(1, 3 * MiB)
                v.creat(path, size)
                os.write(out_fd, f"file {path} {size}\n".encode())


def test_sigkill_writers_at_random_points(tmp_path: Path, me: uuid.UUID) -> None:
    """60 trials, 3 concurrent writers each, each writer killed with SIGKILL at a random moment
    0-25 ms after it is ready (every other trial with slow write-back, so more kills land between
    an entry and its commit).

    After every trial: fsck is clean and every append that returned success is in the log.  The
    next trial's writers continue on the same log (torn tails and dead lock holders recovered);
    every 10 trials the image is formatted afresh, so the log and space never run out."""
    rng = random.Random(1313)
    trials = 60
    image = tmp_path / "kill.img"
    killed = torn = nfiles = ndirs = 0
    want_files: dict[str, int] = {}
    want_dirs: set[str] = set()
    for t in range(trials):
        if t % 10 == 0:
            nfiles += len(want_files)
            ndirs += len(want_dirs)
            want_files, want_dirs = {}, set()
            create_image(image, 32 * GiB)  # sparse
            with map_image(image) as m:
                mkfs(m, me, force=True)
        pids, outs = [], []
        for w in range(3):
            r, wfd = os.pipe()
            tag = f"t{t}w{w}"
            seed = rng.randrange(1 << 30)
            slow = t % 2 == 1
            pids.append(
                fork(
                    lambda tag=tag, seed=seed, wfd=wfd, slow=slow: _kill_writer(
                        image, me, tag, seed, wfd, slow
                    )
                )
            )
            os.close(wfd)
            outs.append(r)
        for fd in outs:
            assert os.read(fd, 6) == b"ready\n"
        t0 = time.monotonic()
        for pid, d in sorted(((pid, rng.uniform(0, 0.025)) for pid in pids), key=lambda x: x[1]):
            time.sleep(max(0.0, t0 + d - time.monotonic()))
            os.kill(pid, signal.SIGKILL)
        status = wait_all(pids)
        killed += sum(1 for rc in status.values() if rc == -signal.SIGKILL)
        assert all(rc in (0, -signal.SIGKILL) for rc in status.values()), status
        for fd in outs:
            for ln in drain(fd):
                kind, path, size = ln.split()
                if kind == "file":
                    want_files[path] = int(size)
                else:
                    want_dirs.add(path)
        files, dirs, problems, notes = played(image)
        assert problems == [], f"trial {t}: {problems}"
        torn += any("interrupted" in n for n in notes)
        missing = {p for p in want_files if files.get(p) != want_files[p]} | (want_dirs - dirs)
        assert not missing, f"trial {t}: appends reported as done are not in the log: {sorted(missing)[:5]}"
    nfiles += len(want_files)
    ndirs += len(want_dirs)
    assert killed >= trials * 3 * 0.9  # the kills really interrupted running writers
    print(f"{trials} trials, {killed} writers killed, {torn} trials left a torn tail slot, "
          f"{nfiles} files and {ndirs} directories confirmed")  # fmt: skip


class KillAt(NoSync):
    """Kills its own process inside the n-th write-back: 1 = the entry is written, not committed;
    2 = committed, the call has not returned."""

    def __init__(self, n: int) -> None:
        super().__init__("test: kill at a write-back")
        self.n = n

    def writeback(self, buf: object, off: int, length: int) -> None:
        self.n -= 1
        if self.n == 0:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("point", [1, 2])
def test_sigkill_at_each_point_of_an_append(fs_image: Path, me: uuid.UUID, point: int) -> None:
    with map_image(fs_image) as m:
        v = Volume(m, me)
        v.mkdir("before")
        v.close()

    def victim() -> None:
        with map_image(fs_image) as m:
            v = Volume(m, me)
            m.sync = KillAt(point)
            v.creat("victim", 5 * MiB)

    (rc,) = wait_all([fork(victim)]).values()
    assert rc == -signal.SIGKILL
    files, dirs, problems, notes = played(fs_image)
    assert problems == []
    if point == 1:  # written, never committed: outside the log, and reported as a torn tail
        assert "victim" not in files and any("interrupted" in n for n in notes)
    else:
        assert files == {"victim": 5 * MiB}
    # the lock died with the victim, and the next writer takes the right slot and space
    with map_image(fs_image) as m:
        v = Volume(m, me, lock_timeout=2)
        f, _ = v.creat("after", MiB)
        assert f.index == (1 if point == 1 else 2)
        assert f.extents[0][1] == (10 if point == 1 else 16) * MiB
        v.close()
    files, dirs, problems, notes = played(fs_image)
    assert problems == [] and not notes and dirs == {"before"}


def test_busy_lock_times_out_naming_the_holder(fs_image: Path, me: uuid.UUID) -> None:
    r, w = os.pipe()
    go_r, go_w = os.pipe()

    def holder() -> None:
        with map_image(fs_image) as m:
            v = Volume(m, me)
            with v.session():
                os.write(w, b"held")
                os.read(go_r, 1)

    pid = fork(holder)
    assert os.read(r, 4) == b"held"
    try:
        with map_image(fs_image) as m:
            v = Volume(m, me, lock_timeout=0.2)
            t0 = time.monotonic()
            with pytest.raises(DeviceBusy, match=f"held by pid {pid}\\); waited 0.2 s"):
                v.mkdir("d")
            assert time.monotonic() - t0 < 2
            assert "d" not in v.tree.dirs
            v.close()
    finally:
        os.write(go_w, b"x")
        assert wait_all([pid]) == {pid: 0}
    files, dirs, problems, _ = played(fs_image)
    assert (files, dirs, problems) == ({}, set(), [])


def test_refresh_catches_up_and_sessions_decide_under_the_lock(fs_image: Path, me: uuid.UUID) -> None:
    with map_image(fs_image) as m1, map_image(fs_image) as m2:
        a = Volume(m1, me)
        b = Volume(m2, me)
        a.mkdir("d")
        f, _ = a.creat("d/x", 3 * MiB)
        assert "d/x" not in b.tree.files  # b's view is older ...
        g, created = b.creat("d/x", 3 * MiB)  # ... but its decision is made from the log
        assert (g, created) == (f, False)
        h, _ = b.creat("d/y", MiB)
        assert h.index == 2 and h.extents[0][1] == f.extents[0][1] + 4 * MiB
        assert a.refresh() == 1 and a.tree.files["d/y"] == h
        assert a.refresh() == 0
        with pytest.raises(FamfsError, match="exists with size"):
            a.creat("d/y", 2 * MiB)
        mkfs(m2, me, force=True)  # another process formats the device again
        with pytest.raises(Reformatted, match="formatted again since it was opened"):
            a.mkdir("e")
        with pytest.raises(Reformatted):
            a.refresh()
        a.close()
        b.close()


def test_threads_share_one_volume(fs_image: Path, me: uuid.UUID) -> None:
    """Threads of one process: the per-inode thread lock serialises what flock cannot."""
    with map_image(fs_image) as m, map_image(fs_image) as m2:
        v = Volume(m, me)
        other = Volume(m2, me)  # a second open of the same image in the same process
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for j in range(25):
                    (v if k % 2 else other).creat(f"t{k}-{j}", MiB)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with v.session():  # re-entrant in one thread, through the same open file
            v.mkdir("x")
            with v.session():
                v.mkdir("x/y")
            with pytest.raises(FamfsError, match="through another open file"):
                other.mkdir("z")
        v.close()
        other.close()
    files, dirs, problems, _ = played(fs_image)
    assert len(files) == 100 and dirs == {"x", "x/y"} and problems == []


def test_concurrent_writers_on_a_simulated_fsdev_device(tmp_path: Path) -> None:
    """fsdev devices cannot be mapped: each writer switches the device to devdax for its session
    and back, under the mode lock, then takes the volume lock (always in that order, so no two
    writers wait for each other crosswise).  The mode is read under the mode lock too: with slow
    sysfs writes, a writer that looked before taking it saw the device unbound mid-switch (as on
    the real kernel).  All succeed; the device ends in fsdev."""
    from daxmode import sim
    from daxmode.famfs.media.identity import ensure_system_uuid
    from daxmode.famfs.medium import open_medium
    from daxmode.modes import Mode, set_mode

    s = sim.standard(tmp_path / "sim", blocks=4)
    sysfs = s.sysfs()
    size = int(s.p("sys/bus/dax/devices/dax0.0/size").read_text())
    os.truncate(s.p("dev/dax0.0"), size)
    me = ensure_system_uuid(sysfs)
    with open_medium(sysfs, "dax0.0") as m:
        mkfs(m, me)
    set_mode(sysfs, "dax0.0", Mode.FSDEV)
    outs, pids = [], []
    for w in range(6):
        r, wfd = os.pipe()

        def writer(w: int = w, wfd: int = wfd) -> None:
            os.environ["DAXMODE_WRITE_DELAY"] = "0.01"  # slow sysfs writes: wide unbound windows
            time.sleep(0.007 * w)  # staggered: later writers look while earlier ones switch
            with open_medium(s.sysfs(), "dax0.0") as m:
                v = Volume(m, me)
                for j in range(3):
                    v.creat(f"w{w}-{j}", MiB)
                    os.write(wfd, f"w{w}-{j}\n".encode())
                v.close()

        pids.append(fork(writer))
        os.close(wfd)
        outs.append(r)
    assert set(wait_all(pids).values()) == {0}
    reported = {ln for fd in outs for ln in drain(fd)}
    assert s.driver("dax0.0") == "fsdev_dax"
    files, _dirs, problems, _ = played(s.p("dev/dax0.0"))  # the simulated device's memory
    assert set(files) == reported and len(reported) == 18 and problems == []
