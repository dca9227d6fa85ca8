"""One output vocabulary (docs/json.md): each typed result's JSON form has exactly the keys the doc
lists for its command, and no command names a shared thing by another key."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from daxmode.famfs.bringup import UpResult
from daxmode.famfs.media import layout as L
from daxmode.famfs.media.results import Copied, CopyResult, CreatResult, MkdirResult
from daxmode.famfs.media.volume import MkfsResult
from daxmode.famfs.mount.command import MountStatus
from daxmode.famfs.mount.spec import MountResult, UmountResult
from daxmode.famfs.status import DeviceStatus, Status
from daxmode.kernel.features import KernelSupport, Tools
from daxmode.ops.units import UnitsReport

DOC = Path(__file__).resolve().parent.parent / "docs" / "json.md"
# a key the vocabulary gives another name: the shared name
RENAMED = {"pid": "server_pid", "start": "from", "target": "to", "device": "chardev"}


def documented(command: str) -> list[str]:
    """The top-level keys docs/json.md lists for ``command`` (the backticked words after its colon,
    outside parentheses: those are a nested object's)."""
    for line in DOC.read_text().splitlines():
        head, _, tail = line.partition(": ")
        if line.startswith("- `") and f"`{command}`" in head[2:].split(", "):
            top = re.sub(r"\([^()]*\)", "", tail)
            return re.findall(r"`([a-z_]+)`", top)
    raise AssertionError(f"docs/json.md has no entry for {command}")


def _sb() -> L.Superblock:
    u = uuid.UUID(int=1)
    return L.Superblock(48, L.DEFAULT_LOG_LEN, u, u, u, 8 << 30, "/dev/dax0.0")


def _mount() -> MountResult:
    return MountResult("/mnt", "/dev/dax0.0", "dax0.0", "copy", "stock kernel", "devdax", "devdax", 42)


def _mount_status() -> MountStatus:
    return MountStatus("/mnt", "/dev/dax0.0", "dax0.0", "copy", "devdax", "devdax", 42, True, True, "live")


RESULTS = {
    "famfs mkfs": lambda: MkfsResult(_sb(), source="/dev/dax0.0").to_json(),
    "famfs mkdir": lambda: MkdirResult("img", "a/b", ["a", "a/b"]).to_json(),
    "famfs cp": lambda: CopyResult("img", "d", [Copied("/tmp/x", "d/x", 3)]).to_json(),
    "famfs mount": lambda: _mount().to_json(),
    "famfs umount": lambda: UmountResult("/mnt", "/dev/dax0.0", "dax0.0", 42).to_json(),
    "famfs up": lambda: UpResult("dax0.0", "/mnt", "devdax", False, True).to_json(),
    "famfs status": lambda: Status(
        KernelSupport(), "copy", "why", Tools(None, None, None), None, [], [], [_mount_status()]
    ).to_json(),
    "install-units": lambda: UnitsReport("run").to_json(),
}


@pytest.mark.parametrize("command", sorted(RESULTS))
def test_json_form_has_the_documented_keys(command: str) -> None:
    got = RESULTS[command]()
    assert set(got) == set(documented(command)), command


def test_nested_forms_and_creat() -> None:
    dev = DeviceStatus("dax0.0", "devdax", 1 << 30).to_json()
    assert list(dev) == ["chardev", "mode", "size", "mounted_at", "mounts", "famfs"]
    assert set(_mount_status().to_json()) >= {"chardev", "server_pid", "source", "mountpoint"}
    meta = L.FileMeta(3, "f", 4096, 0, 0, 0, 0o644, 0, ((0, 4 << 20, 2 << 20),))
    creat = CreatResult("img", meta, True).to_json()
    assert set(creat) == set(meta.to_dict()) | {"source", "created", "warnings"}


def _keys(obj: object) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_no_result_names_a_shared_thing_otherwise() -> None:
    every = set().union(*(_keys(make()) for make in RESULTS.values()))
    assert not every & set(RENAMED), {k: RENAMED[k] for k in every & set(RENAMED)}
