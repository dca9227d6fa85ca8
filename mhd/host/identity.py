"""Per-guest identity, and host state planted to prove none of the host's leaks into a guest.

Every guest's root is the host's root (read-only over 9p) under a private tmpfs overlay, so without
care each guest would be the host: the same famfs system UUID (/opt/famfs/system_uuid decides
who is the famfs master), the same /etc/machine-id, the host's own daxmode and daxctl
configuration and udev rules.  /init therefore masks ``MASKED`` on the overlay (whiteouts: the
host is never touched) and writes this guest's own machine-id, hostname and famfs system UUID.

Proof on every run: when the harness may (root, mount namespaces), it first plants decoy host
state -- a host famfs UUID, machine-id, a daxmode.d rule that would move every device to
system-ram, a daxctl.conf.d section, a udev rule that leaves a marker -- in a private mount
namespace that only the harness and its QEMUs see (overlays on /etc and /opt backed by tmpfs; the
host's files are never written, and the namespace goes away with the harness, however it ends).
The guests' lower root then holds that state, and tests/vm/guest/test_identity.py checks that the
guest sees its own identity instead, reading the raw lower at /run/mhd/hostroot for comparison.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

MASKED = (
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/hostname",
    "/opt/famfs",
    "/etc/daxmode.d",
    "/etc/daxctl.conf.d",
    "/etc/udev/rules.d",
    "/run/daxmode",
    "/run/lock/daxmode",
    "/run/daxmode-apply.log",
)
"""Host-specific paths a guest never sees (famfs identity, machine identity, device configuration,
udev rules that act on dax devices, daxmode's runtime state); init.sh removes them on the overlay."""

PLANT_TOPS = ("/etc", "/opt")
DECOY_UDEV_MARKER = "/run/mhd-host-decoy-rule-ran"


@dataclass(frozen=True)
class GuestIdentity:
    host: int
    hostname: str
    machine_id: str
    system_uuid: str

    def env(self) -> dict[str, str]:
        return {
            "DAXMODE_VM_HOSTNAME": self.hostname,
            "DAXMODE_VM_MACHINE_ID": self.machine_id,
            "DAXMODE_VM_SYSTEM_UUID": self.system_uuid,
        }


def identities(hosts: int, rng=None) -> list[GuestIdentity]:
    """A fresh identity per guest, new for every run (``rng``: a random.Random, for tests)."""

    def new() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4) if rng else uuid.uuid4()

    return [GuestIdentity(h, f"daxmode-host{h}", new().hex, str(new())) for h in range(hosts)]


def mask_env(masked: tuple[str, ...] = MASKED) -> str:
    """``MHD_MASK`` for guest.env: absolute paths without blanks, space-separated."""
    for p in masked:
        if not p.startswith("/") or any(c.isspace() for c in p) or ".." in p.split("/"):
            raise ValueError(f"bad masked path {p!r}")
    return " ".join(masked)


def decoy_files(decoy: GuestIdentity) -> dict[str, str]:
    """Planted host state: path -> contents.  Each would change a verdict if a guest saw it."""
    return {
        "/opt/famfs/system_uuid": decoy.system_uuid + "\0",
        "/etc/machine-id": decoy.machine_id + "\n",
        "/etc/daxmode.d/00-mhd-host-decoy.toml": (
            "# planted by the harness: a guest that applies this has read the host's configuration\n"
            '[[device]]\nmatch = { name = "dax*" }\nmode = "system-ram"\nonline = false\n'
        ),
        "/etc/daxctl.conf.d/00-mhd-host-decoy.conf": (
            "[reconfigure-device mhd-host-decoy]\nnvdimm.uuid = 00000000-0000-4000-8000-0000000000dc\n"
            "mode = system-ram\n"
        ),
        "/etc/udev/rules.d/00-mhd-host-decoy.rules": (
            f'ACTION=="add", SUBSYSTEM=="dax", RUN+="/bin/touch {DECOY_UDEV_MARKER}"\n'
        ),
    }


def plant_tops(tops: tuple[str, ...], protected: list[Path], exists=os.path.isdir) -> list[str]:
    """The directories to overlay: existing ones that hold nothing the run must write for real."""
    out = []
    for t in tops:
        if not exists(t):
            continue
        tp = Path(t)
        if any(p == tp or tp in p.parents for p in protected):
            continue  # e.g. a checkout under /opt: its results must reach the real file system
        out.append(t)
    return out


# ---- the private mount namespace (root only) ---------------------------------------------------

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def _libc():  # type: ignore[no-untyped-def]
    return ctypes.CDLL(None, use_errno=True)


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = _libc()
    fs = fstype.encode() if fstype else None
    rc = libc.mount(src.encode(), target.encode(), fs, flags, data.encode() if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype or ''} {src} on {target}: {os.strerror(e)}")


def plant_host_state(workdir: Path, decoy: GuestIdentity, protected: list[Path]) -> tuple[list[str], str]:
    """Enter a private mount namespace and plant ``decoy_files`` there.  Returns (planted paths, note).

    Nothing is planted (and the note says why) without the privileges for it.
    """
    if os.geteuid() != 0:
        return [], "not root: host state not planted"
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        return [], f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}: host state not planted"
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE, None)
    base = workdir / "plant"
    base.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", str(base), "tmpfs", 0, "mode=0700")
    tops = plant_tops(PLANT_TOPS, protected)
    files = decoy_files(decoy)
    planted = []
    for top in tops:
        name = top.strip("/")
        upper, work = base / "upper" / name, base / "work" / name
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        for path, text in files.items():
            if not path.startswith(top + "/"):
                continue
            dest = upper / path[len(top) + 1 :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            planted.append(path)
        _mount("overlay", top, "overlay", 0, f"lowerdir={top},upperdir={upper},workdir={work}")
    skipped = sorted({p for p in files if p not in planted})
    note = f"planted {len(planted)} host files in a private mount namespace"
    if skipped:
        note += f" (not {', '.join(skipped)}: directory absent or holds the run's own files)"
    return sorted(planted), note


def detach(path: Path) -> None:
    """Lazily unmount the planting tmpfs so its (empty) mount point can be removed."""
    with contextlib.suppress(OSError):
        if _libc().umount2(str(path).encode(), 2) != 0:  # MNT_DETACH
            raise OSError(ctypes.get_errno(), "umount2")
