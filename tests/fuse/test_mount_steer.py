"""A mount nobody can steer (issue 16): real /dev/fuse mounts by root while uid 65534 attacks.

* the mount point is swapped between a directory and a symlink to a victim directory in a tight
  loop (``renameat2(RENAME_EXCHANGE)``, so the name is never missing) while root mounts again and
  again: root's mount must never land anywhere but the directory it checked;
* a symlinked mount point (or one reached through a symlink) is refused by mount, umount and down,
  and ``umount LINK`` answers at once instead of hanging;
* the old, computable control-socket name is bound first by the attacker: mount and umount work
  and never talk to the squatter; a listener that is not the server is not trusted.

Results are read from /proc/self/mountinfo, the mount record and the victim directory.  The
attacker's processes run the system python (the venv's lives under root's 0700 home).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_mount_host import World, make_fs, mountinfo_line, w  # noqa: F401  (w is a fixture)

from daxmode.famfs.mount import records as S
from daxmode.famfs.mount.server import control_name

NOBODY = 65534
PY = "/usr/bin/python3"
TRIALS = 40

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or os.geteuid() != 0,
        reason="real FUSE mounts need /dev/fuse and root",
    ),
    pytest.mark.skipif(not os.access(PY, os.X_OK), reason=f"the attacker's interpreter {PY} is missing"),
]

RACER = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
flips = 0
def done(*_):
    print(flips, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, done)
os.chdir(sys.argv[1])
print("ready", flush=True)
while True:  # swap the directory "mnt" with the symlink "lnk" (-> the victim), atomically
    if libc.renameat2(-100, b"mnt", -100, b"lnk", 2) == 0:
        flips += 1
"""

SQUATTER = r"""
import os, signal, socket, sys, threading
hits = 0
def done(*_):
    print(hits, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, done)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b"\0" + sys.argv[1].encode())
s.listen(8)
t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    t.bind(sys.argv[2])
    print("bound the new name too", flush=True)
except OSError as e:
    print("new name:", e.strerror, flush=True)
while True:
    c, _ = s.accept()
    hits += 1
    c.sendall(b'{"done": true, "ok": true}\n')
    c.close()
"""


def drop() -> None:
    os.nice(19)  # the attacker spins; root's mounts and unmounts must still get the CPU on a busy host
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def attacker(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-c", script, *args], stdout=subprocess.PIPE, text=True, preexec_fn=drop)


def stop(p: subprocess.Popen[str]) -> int:
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    return int(out.split()[-1])


def mounts_under(base: Path) -> list[str]:
    return [
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(base))
    ]  # fmt: skip


def test_mount_point_race_never_redirects(w: World) -> None:  # noqa: F811
    make_fs(w)
    attic = w.base / "attic"  # the attacker's directory, on the way to root's mount point
    attic.mkdir()
    os.chown(attic, NOBODY, NOBODY)
    victim = w.base / "victim"  # what the attacker wants root's mount over
    victim.mkdir()
    mnt, lnk = attic / "mnt", attic / "lnk"
    mnt.mkdir()
    lnk.symlink_to(victim)
    os.lchown(mnt, NOBODY, NOBODY)
    os.lchown(lnk, NOBODY, NOBODY)
    racer = attacker(RACER, str(attic))
    assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    outcomes: dict[str, int] = {}
    try:
        for _ in range(TRIALS):
            r = w.dx("famfs", "mount", str(w.img), str(mnt), check=False)
            log = S.log_path(w.sysfs, str(mnt))
            seen = (r.returncode, r.stdout, r.stderr, log.read_text() if log.exists() else "")
            assert mountinfo_line(str(victim)) is None and mountinfo_line(str(lnk)) is None, seen
            if r.returncode == 0:
                line = mountinfo_line(str(mnt))
                assert line is not None and f" fuse.famfs {w.img} " in line, r.stdout
                assert os.path.isdir(mnt / "shared"), "the mount is not at the name root checked"
                try:
                    u = w.dx("famfs", "umount", str(mnt), check=False, timeout=60)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"umount took over 60 s; server log:\n{log.read_text()}")
                assert u.returncode == 0 and mountinfo_line(str(mnt)) is None, u.stderr
                key = "mounted where checked"
            else:
                assert r.returncode == 13 and r.stderr.count("\n") == 1, r.stderr
                key = "refused: replaced while mounting" if "replaced" in r.stderr else "refused: a symlink"
            outcomes[key] = outcomes.get(key, 0) + 1
            assert mounts_under(w.base) == [], "a mount was left behind"
    finally:
        flips = stop(racer)
        for where in mounts_under(w.base):  # a failed run must not leave root's mounts behind
            subprocess.run(["umount", "-l", where], check=False)
    print(f"\nmount-point race: {TRIALS} trials, {flips} swaps by uid {NOBODY}: {outcomes}; redirected 0")
    assert flips > TRIALS  # the attacker really was swapping all along
    assert sum(v for k, v in outcomes.items() if k.startswith("refused")) >= 1
    assert os.listdir(victim) == [] and w.record() is None


def test_symlinked_mount_point_is_refused(w: World) -> None:  # noqa: F811
    make_fs(w)
    link = w.base / "link"
    link.symlink_to(w.mnt)
    r = w.famfs("mount", str(w.img), str(link), check=False)
    assert r.returncode == 13 and f"mount point {link} is a symlink (to {w.mnt})" in r.stderr, r.stderr
    via = w.base / "via"
    via.symlink_to(w.base)
    r = w.famfs("mount", str(w.img), str(via / "mnt"), check=False)
    assert r.returncode == 13 and f"is reached through a symlink (it is {w.mnt})" in r.stderr, r.stderr
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None
    w.famfs("mount", str(w.img), str(w.mnt))
    # umount and down by the symlink: refused at once, the mount left alone
    for cmd in ("umount", "down"):
        t0 = time.monotonic()
        r = w.famfs(cmd, str(link), check=False)
        assert time.monotonic() - t0 < 10, f"famfs {cmd} LINK took {time.monotonic() - t0:.1f} s"
        assert r.returncode == 13 and "is a symlink" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert mountinfo_line(str(w.mnt)) is not None
    r = w.famfs("umount", str(via / "mnt"), check=False)
    assert r.returncode == 13 and "reached through a symlink" in r.stderr
    w.famfs("umount", str(w.mnt))
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None


def test_squatted_socket_name_neither_blocks_nor_fools(w: World) -> None:  # noqa: F811
    make_fs(w)
    # the name the server used to take: abstract, computable by anyone from the mount point
    old = "daxmode-famfs-" + hashlib.sha256(str(S.record_path(w.sysfs, str(w.mnt))).encode()).hexdigest()[:32]
    new = str(w.root / "run/daxmode" / control_name(str(w.mnt)))
    squatter = attacker(SQUATTER, old, new)
    assert squatter.stdout is not None
    said = squatter.stdout.readline().strip()
    assert said.startswith("new name:"), said  # the run directory is root's: nobody binds there
    try:
        r = w.famfs("mount", str(w.img), str(w.mnt), check=False)
        assert r.returncode == 0, r.stderr
        rec = w.record()
        assert rec is not None and S.server_alive(rec)
        r = w.famfs("umount", str(w.mnt))
        assert "unmounted" in r.stdout and mountinfo_line(str(w.mnt)) is None and w.record() is None
        assert not S.server_alive(rec)
    finally:
        hits = stop(squatter)
    assert hits == 0, "root's umount talked to the squatter"
    print(f"\nsquatted control socket: mount and umount worked, {hits} connections reached the squatter")


def test_a_listener_that_is_not_the_server_is_not_trusted(w: World) -> None:  # noqa: F811
    make_fs(w)
    w.famfs("mount", str(w.img), str(w.mnt))
    rec = w.record()
    assert rec is not None
    path = w.root / "run/daxmode" / control_name(str(w.mnt))
    assert path.is_socket()
    path.unlink()  # another process (root here: only root can) answers in the server's place
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(str(path))
    impostor.listen(1)
    try:
        r = w.famfs("umount", str(w.mnt), check=False)
        assert r.returncode == 13 and f"not by its server (pid {rec.pid}); not trusted" in r.stderr, r.stderr
        assert mountinfo_line(str(w.mnt)) is not None and S.server_alive(rec)
    finally:
        impostor.close()
        path.unlink()
    r = w.famfs("umount", str(w.mnt))  # nobody listens: unmounted by handle, the server finishes
    assert mountinfo_line(str(w.mnt)) is None and w.record() is None and not S.server_alive(rec)
