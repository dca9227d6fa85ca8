"""Every command, driven with malformed values: a documented exit code, one ``daxmode:`` line
on stderr, no traceback, and nothing changed on the (simulated) machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from daxmode import sim
from daxmode.cli import main
from daxmode.fsdev import create_image

MiB = 1 << 20

# (arguments after the global options, expected exit code); {img} is a famfs image, {src} a file
CASES: list[tuple[list[str], int]] = [
    (["set", "../devices/dax0.0", "system-ram"], 3),
    (["set", "/tmp/x/dax0.0", "system-ram"], 3),
    (["set", "dax0", "devdax"], 3),
    (["set", "", "devdax"], 3),
    (["set", "dax9.9", "devdax"], 3),
    (["set", "dax0.0", "ramdisk"], 4),
    (["set", "dax0.0", "system-ram", "--timeout", "-1"], 2),
    (["set", "dax0.0", "system-ram", "--timeout", "nan"], 2),
    (["set", "dax0.0", "system-ram", "--timeout", "inf"], 2),
    (["set", "dax0.0", "system-ram", "--timeout", "abc"], 2),
    (["set", "dax0.0", "devdax", "--no-online"], 11),
    (["set", "dax0.0", "devdax", "extra"], 2),
    (["set", "dax0.0"], 2),
    (["set", "dax0.0", "devdax", "--bogus"], 2),
    (["list", "foo"], 3),
    (["list", "/sys/bus/dax/drivers/dax0.0"], 3),
    (["apply", "dax7.0"], 3),
    (["create-device", "x"], 11),
    (["create-device", "region1", "--size", "ten"], 2),
    (["create-device", "region1", "--size", "0"], 2),
    (["create-device", "region1", "--align", "3M"], 11),
    (["create-device", "region1", "--mode", "blah"], 4),
    (["create-device", "region0"], 11),
    (["destroy-device", "dax9.9"], 3),
    (["destroy-device", "../dax1.1"], 3),
    (["resize", "dax1.1", "--size", "abc"], 2),
    (["resize", "dax1.1"], 2),
    (["resize", "dax1.1", "--size", "3M"], 11),
    (["famfs", "mkfs", "{img}", "--log-len", "abc"], 2),
    (["famfs", "mkfs", "{img}", "--force", "--log-len", "3M"], 11),
    (["famfs", "mkfs", "{img}", "--version", "49"], 2),
    (["famfs", "mkfs", "/nonexistent.img"], 11),
    (["famfs", "creat", "{img}", "f", "-s", "ten"], 2),
    (["famfs", "creat", "{img}", "f", "-s", "0"], 2),
    (["famfs", "creat", "{img}", "f", "-s", "1M", "-N", "99"], 2),
    (["famfs", "creat", "{img}", "f", "-s", "1M", "-m", "999"], 2),
    (["famfs", "creat", "{img}", "f", "-s", "1M", "-u", "-1"], 2),
    (["famfs", "creat", "{img}", "f", "-s", "1M", "-g", "abc"], 2),
    (["famfs", "creat", "{img}", "/" + "x" * 100, "-s", "1M"], 11),
    (["famfs", "mkdir", "{img}", "d", "-m", "99999"], 2),
    (["famfs", "read", "{img}", "a", "--offset", "abc"], 2),
    (["famfs", "read", "{img}", "a", "--offset", "-5"], 2),
    (["famfs", "read", "{img}", "a", "--length", "0"], 2),
    (["famfs", "read", "{img}", "a", "-o", "/nonexistent/x"], 2),
    (["famfs", "read", "{img}", "a", "--offset", "99999999"], 11),
    (["famfs", "read", "{img}", "missing"], 16),
    (["famfs", "cp", "{img}", "/nonexistent/src", "dst"], 2),
    (["famfs", "cp", "{img}", "{src}"], 2),
    (["famfs", "ls", "{img}", "nothere"], 16),
    (["famfs", "ls", "/tmp/x/dax0.0"], 11),
    (["famfs", "up", "/tmp/dax0.0", "/mnt"], 3),
    (["famfs", "getmap", "{img}", "nothere"], 16),
    (["completion", "tcsh"], 2),
    (["man", "-o", "/nonexistent/dir/x"], 2),
    (["install-units", "--flavour", "x"], 2),
    (["no-such-command"], 2),
]


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("inputs")
    s = sim.standard(d / "root")
    img = d / "f.img"
    create_image(img, 64 * MiB)
    src = d / "src.bin"
    src.write_bytes(b"x" * 5000)
    r = CliRunner().invoke(main, ["--root", str(s.root), "--sim", "famfs", "mkfs", str(img)])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(
        main, ["--root", str(s.root), "--sim", "famfs", "creat", str(img), "a", "-s", "4096"]
    )
    assert r.exit_code == 0, r.stderr
    s.clear_log()
    return s.root, img, src


@pytest.mark.parametrize(("args", "code"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_malformed_input(machine: tuple[Path, Path, Path], args: list[str], code: int) -> None:
    root, img, src = machine
    argv = [a.replace("{img}", str(img)).replace("{src}", str(src)) for a in args]
    r = CliRunner().invoke(main, ["--root", str(root), "--sim", *argv])
    assert isinstance(r.exception, SystemExit) or r.exception is None, repr(r.exception)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("daxmode: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert sim.Sim(root).log() == [], "a refused command reached the kernel"


def test_malformed_fault_injection_variable(machine: tuple[Path, Path, Path]) -> None:
    root, _, _ = machine
    env = dict(os.environ, DAXMODE_FAULT="nonsense")
    p = subprocess.run(
        [sys.executable, "-m", "daxmode", "--root", str(root), "--sim", "set", "dax0.0", "fsdev"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 11 and p.stderr.count("\n") == 1 and "DAXMODE_FAULT" in p.stderr, p.stderr


def test_internal_error_is_one_line(
    machine: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that is not daxmode's own still gets one line and exit 1 (no traceback)."""
    root, _, _ = machine
    import daxmode.kernel.devices as devices

    def boom(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(devices, "find_devices", boom)
    monkeypatch.setattr("daxmode.cli.devices.find_devices", boom)
    r = CliRunner().invoke(main, ["--root", str(root), "--sim", "list"])
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "daxmode: internal error: ZeroDivisionError: injected (DAXMODE_DEBUG=1 shows the traceback)"
    ]


def test_subprocess_has_no_traceback_either(machine: tuple[Path, Path, Path]) -> None:
    root, img, _ = machine
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "daxmode",
            "--root",
            str(root),
            "--sim",
            "famfs",
            "read",
            str(img),
            "a",
            "--offset",
            "-5",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("daxmode: famfs read: ")
