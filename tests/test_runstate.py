"""The run-state store (daxmode.runstate): one key encoding without collisions, atomic records in
checked subdirectories, and the bring-up records that used to share a file for /a_b and /a/b."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daxmode import runstate
from daxmode.errors import InvalidArgument, UnsafePath
from daxmode.sysfs import Sysfs


def test_keys_are_injective_and_never_dot_names() -> None:
    keys = ["/a_b", "/a/b", "/a%2Fb", "/a b", ".", "..", ".hidden", "a", "A", "/ä"]
    enc = [runstate.key(k) for k in keys]
    assert len(set(enc)) == len(keys)
    assert all("/" not in e and not e.startswith(".") for e in enc), enc
    assert [runstate.unkey(e) for e in enc] == keys
    assert runstate.key("dax0.0") == "dax0.0"  # device names, as the lock and journal files have them
    with pytest.raises(InvalidArgument):
        runstate.key("")
    with pytest.raises(InvalidArgument, match="too long"):
        runstate.key("/x" * 200)


def test_records_round_trip_atomically(tmp_path: Path) -> None:
    sysfs = Sysfs(tmp_path)
    store = runstate.Records("things")
    store.save(sysfs, "/a_b", {"n": 1})
    store.save(sysfs, "/a/b", {"n": 2})
    store.save(sysfs, "/a/b", {"n": 3})  # replaced, not appended
    assert store.load(sysfs, "/a_b") == {"n": 1} and store.load(sysfs, "/a/b") == {"n": 3}
    d = tmp_path / "run/daxmode/things"
    assert sorted(os.listdir(d)) == ["%2Fa%2Fb.json", "%2Fa_b.json"]  # no temporary left behind
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert [r["n"] for r in store.all(sysfs)] == [3, 1]
    (d / "%2Fjunk.json").write_text("[not an object]")
    assert len(store.all(sysfs)) == 2  # what does not decode to an object is not a record
    store.remove(sysfs, "/a_b")
    assert store.load(sysfs, "/a_b") is None and store.load(sysfs, "/never") is None


def test_a_subdirectory_someone_else_prepared_is_refused(tmp_path: Path) -> None:
    sysfs = Sysfs(tmp_path)
    runstate.run_dir(sysfs)
    trap = tmp_path / "trap"
    trap.mkdir()
    (tmp_path / "run/daxmode/things").symlink_to(trap)
    store = runstate.Records("things")
    with pytest.raises(UnsafePath, match="symlink"):
        store.save(sysfs, "/a", {})
    assert os.listdir(trap) == [] and store.load(sysfs, "/a") is None and store.all(sysfs) == []


def test_run_dir_is_checked_and_named(tmp_path: Path) -> None:
    sysfs = Sysfs(tmp_path)
    path = runstate.run_dir(sysfs, "sockets")
    assert path == str(tmp_path / "run/daxmode/sockets") and os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(tmp_path / "run/daxmode/sockets", 0o755)
    with pytest.raises(UnsafePath, match="must be 0700"):
        runstate.run_dir(sysfs, "sockets")


def test_bringup_records_of_a_b_and_a_slash_b_are_two(tmp_path: Path) -> None:
    from daxmode.famfs import bringup

    sysfs = Sysfs(tmp_path)
    bringup._STORE.save(sysfs, "/mnt/a_b", {"device": "dax0.0", "previous_mode": "devdax"})
    bringup._STORE.save(sysfs, "/mnt/a/b", {"device": "dax1.0", "previous_mode": "fsdev"})
    assert (bringup._STORE.load(sysfs, "/mnt/a_b") or {}).get("device") == "dax0.0"
    assert (bringup._STORE.load(sysfs, "/mnt/a/b") or {}).get("device") == "dax1.0"
