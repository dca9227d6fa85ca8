"""Unit tests of the QEMU harness's pure parts (qemu/mhd): command lines, inputs, parsing, decisions."""

from __future__ import annotations

import json
import lzma
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "qemu"))

from mhd import (  # noqa: E402
    facts,
    guestnet,
    harness,
    identity,
    initramfs,
    kernel,
    qemucmd,
    shwords,
    suiterun,
    suites,
    timing,
    verdict,
    warm,
    zygote,
)
from mhd.errors import BadInput  # noqa: E402


def fake_bzimage(version: str, ptr: int = 0x3000) -> bytes:
    img = bytearray(0x4000)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x20E, ptr - 0x200)
    v = version.encode() + b" (builder@host) #1 SMP\0"
    img[ptr : ptr + len(v)] = v
    return bytes(img)


def spec(tmp_path: Path, **kw) -> qemucmd.GuestSpec:
    base = dict(
        qemu="qemu-system-x86_64",
        kernel=tmp_path / "bzImage",
        initrd=tmp_path / "initrd",
        module_tree=tmp_path / "mods",
        share_dir=tmp_path / "share",
        run_dir=tmp_path / "run",
        console_log=tmp_path / "console.log",
        backend="cxl",
        host=1,
        mem_mb=1024,
        smp=1,
        accel="tcg",
        shared_file=Path("/dev/shm/x/shared.raw"),
        shared_size=512 << 20,
    )
    base.update(kw)
    return qemucmd.GuestSpec(**base)


def opt_values(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


# ---- kernel identification ---------------------------------------------------------------------


def test_bzimage_version_is_read_from_the_setup_header() -> None:
    banner = kernel.parse_bzimage_version(fake_bzimage("7.3.4+deb13-amd64"))
    assert banner.startswith("7.3.4+deb13-amd64 (builder@host)")


@pytest.mark.parametrize(
    "blob",
    [b"", b"\0" * 0x400, b"MZ" + b"\0" * 0x1000],
    ids=["empty", "zeros", "no-hdrs"],
)
def test_non_bzimage_is_rejected(blob: bytes) -> None:
    with pytest.raises(ValueError):
        kernel.parse_bzimage_version(blob)


def test_read_kernel_reports_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        kernel.read_kernel(tmp_path / "nope")
    with pytest.raises(BadInput, match="is a directory"):
        kernel.read_kernel(tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    with pytest.raises(BadInput, match="not an x86 bzImage"):
        kernel.read_kernel(junk)
    good = tmp_path / "bzImage"
    good.write_bytes(fake_bzimage("6.14.11-famfs"))
    assert kernel.read_kernel(good).version == "6.14.11-famfs"


def test_read_kernel_permission() -> None:
    """An unreadable kernel image is a clear error.  Root reads everything, so as root the check
    runs in a child that has dropped to nobody (CI runs as root)."""
    d = Path(tempfile.mkdtemp(prefix="daxmode-kperm-"))
    try:
        d.chmod(0o755)  # nobody must reach the file to be refused by its own mode
        p = d / "bz"
        p.write_bytes(fake_bzimage("1.2.3"))
        p.chmod(0)
        if os.geteuid() != 0:
            with pytest.raises(BadInput, match="not readable"):
                kernel.read_kernel(p)
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 3
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                kernel.read_kernel(p)
                code = 1  # read it: the permission check did not refuse
            except BadInput as e:
                code = 0 if "not readable" in str(e) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "as nobody: expected BadInput('... not readable')"
    finally:
        shutil.rmtree(d)


def make_tree(base: Path, version: str) -> Path:
    t = base / version
    t.mkdir(parents=True)
    (t / "modules.dep").write_text("")
    return t


@pytest.mark.parametrize("layout", ["direct", "parent", "lib", "usrlib"])
def test_module_tree_is_found_in_every_layout(tmp_path: Path, layout: str) -> None:
    v = "7.3.4+deb13-amd64"
    where = {
        "direct": tmp_path,
        "parent": tmp_path,
        "lib": tmp_path / "lib/modules",
        "usrlib": tmp_path / "usr/lib/modules",
    }
    tree = make_tree(where[layout], v)
    arg = tree if layout == "direct" else tmp_path
    assert kernel.find_module_tree(arg, v) == tree


def test_module_tree_for_another_kernel_is_refused_naming_both(tmp_path: Path) -> None:
    make_tree(tmp_path / "lib/modules", "6.12.95+deb12-amd64")
    with pytest.raises(BadInput, match=r"no module tree for kernel 7\.3\.4.*found 6\.12\.95\+deb12-amd64"):
        kernel.find_module_tree(tmp_path, "7.3.4+deb13-amd64")


def test_module_tree_without_modules_dep_is_refused(tmp_path: Path) -> None:
    (tmp_path / "7.3.4").mkdir()
    with pytest.raises(BadInput, match=r"no modules\.dep"):
        kernel.find_module_tree(tmp_path, "7.3.4")
    with pytest.raises(BadInput, match="no such directory"):
        kernel.find_module_tree(tmp_path / "absent", "7.3.4")


def test_load_order_puts_dependencies_first() -> None:
    deps = kernel.parse_modules_dep(
        "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/fs/netfs/netfs.ko.xz:\n"
    )
    order = kernel.load_order(deps, ["virtio_pci", "9pnet_virtio", "9p"], builtin=set())
    names = [kernel.module_name(p) for p in order]
    assert names == ["netfs", "9pnet", "9pnet_virtio", "9p"]
    # A module neither present nor built in, when modules.builtin exists, is an error.
    with pytest.raises(BadInput, match="lacks virtio_pci"):
        kernel.load_order(deps, ["virtio_pci"], builtin={"virtio_console"})
    assert kernel.load_order(deps, ["virtio_pci"], builtin={"virtio_pci"}) == []


# ---- QEMU command lines ------------------------------------------------------------------------


def test_cxl_command_shares_one_file_and_hides_the_hypervisor_bit(tmp_path: Path) -> None:
    cmd = qemucmd.build_command(spec(tmp_path))
    assert "q35,cxl=on" in opt_values(cmd, "-machine")
    assert opt_values(cmd, "-cpu") == ["max,hypervisor=off"]
    mem = [o for o in opt_values(cmd, "-object") if o.startswith("memory-backend-file")]
    assert mem == [
        f"memory-backend-file,id=cxl-mem0,share=on,mem-path=/dev/shm/x/shared.raw,size={512 << 20}"
    ]
    devs = opt_values(cmd, "-device")
    assert "cxl-type3,bus=cxl-rp0,volatile-memdev=cxl-mem0,id=cxl-vmem0,sn=0x2" in devs
    assert any(d.startswith("pxb-cxl,") for d in devs)
    assert f"cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size={4 << 30}" in opt_values(cmd, "-M")
    # every PCI device goes on pcie.0 (the pxb-cxl bus takes only bridges)
    for d in devs:
        if d.startswith(("virtio-", "virtio")) and "pci" in d.split(",")[0]:
            assert "bus=pcie.0" in d, d
    append = opt_values(cmd, "-append")[0]
    assert "memhp_default_state=offline" in append and "mhd_host=1" in append
    assert "-no-reboot" in cmd
    assert opt_values(cmd, "-accel") == ["tcg"]


def test_show_hypervisor_and_kvm_change_only_the_cpu(tmp_path: Path) -> None:
    assert opt_values(qemucmd.build_command(spec(tmp_path, hide_hypervisor=False)), "-cpu") == ["max"]
    kvm = qemucmd.build_command(spec(tmp_path, accel="kvm"))
    assert opt_values(kvm, "-cpu") == ["host,hypervisor=off"] and opt_values(kvm, "-accel") == ["kvm"]


def test_nvdimm_command_has_slots_and_a_shared_nvdimm(tmp_path: Path) -> None:
    cmd = qemucmd.build_command(spec(tmp_path, backend="nvdimm", shared_size=1 << 30, host=0))
    assert "q35,nvdimm=on" in opt_values(cmd, "-machine")
    m = opt_values(cmd, "-m")[0]
    assert m.startswith("1024M,slots=") and "maxmem=" in m
    assert int(m.split("maxmem=")[1].rstrip("M")) >= 1024 + 1024
    assert "nvdimm,id=nvdimm0,memdev=nv0" in opt_values(cmd, "-device")
    assert any("share=on" in o and "id=nv0" in o for o in opt_values(cmd, "-object"))
    two = qemucmd.build_command(
        spec(
            tmp_path,
            backend="nvdimm",
            shared_size=1 << 30,
            second_file=tmp_path / "b.raw",
            second_size=512 << 20,
        )
    )
    assert "nvdimm,id=nvdimm1,memdev=nv1" in opt_values(two, "-device")
    assert any(f"mem-path={tmp_path / 'b.raw'},size={512 << 20}" in o for o in opt_values(two, "-object"))
    assert int(opt_values(two, "-m")[0].split("maxmem=")[1].rstrip("M")) >= 1024 + 1024 + 512
    assert opt_values(cmd, "-cpu") == ["max"]  # the hypervisor bit only matters to CXL region commit


def test_nvdimm_label_area_comes_on_top_of_the_region(tmp_path: Path) -> None:
    """ndctl's tests need labels; the region keeps --shared-size so its 16M alignment holds."""
    cmd = qemucmd.build_command(
        spec(tmp_path, backend="nvdimm", shared_size=6 << 30, host=0, label_size=128 << 10)
    )
    assert "nvdimm,id=nvdimm0,memdev=nv0,label-size=131072" in opt_values(cmd, "-device")
    assert any(f"id=nv0,share=on,mem-path=/dev/shm/x/shared.raw,size={(6 << 30) + (128 << 10)}" in o
               for o in opt_values(cmd, "-object"))  # fmt: skip
    cfg = harness.parse_args(["--backend", "nvdimm", "--nvdimm-label-size", "128K", "--no-second-nvdimm"])
    assert cfg.label_size == 128 << 10 and not cfg.second_nvdimm


def test_shares_and_channels_are_per_host(tmp_path: Path) -> None:
    c0 = qemucmd.build_command(spec(tmp_path, host=0, share_dir=tmp_path / "s0"))
    c1 = qemucmd.build_command(spec(tmp_path, host=1, share_dir=tmp_path / "s1"))
    fs0, fs1 = opt_values(c0, "-fsdev"), opt_values(c1, "-fsdev")
    assert any(",path=/," in f and "readonly=on" in f for f in fs0)
    assert any("s0" in f and "readonly" not in f for f in fs0) and any("s1" in f for f in fs1)
    chars0 = " ".join(opt_values(c0, "-chardev"))
    assert "host0.agent" in chars0 and "host0.console" in chars0 and "host1" not in chars0
    assert f"logfile={tmp_path / 'console.log'}" in chars0


def test_network_is_a_star_of_unix_stream_links(tmp_path: Path) -> None:
    links = qemucmd.net_links(3, tmp_path)
    assert [ln.server for ln in links[0]] == [True, True]
    assert [ln.link for ln in links[2]] == [2] and links[2][0].server is False
    assert links[0][1].socket == links[2][0].socket
    cmd = qemucmd.build_command(spec(tmp_path, host=2, net=links[2]))
    netdevs = opt_values(cmd, "-netdev")
    assert netdevs == [f"stream,id=net2,server=off,addr.type=unix,addr.path={tmp_path / 'link2.sock'}"]
    assert "user" not in " ".join(netdevs) and "tap" not in " ".join(netdevs)
    assert qemucmd.guest_addr(0, 2) == "10.77.2.1" and qemucmd.guest_addr(2, 2) == "10.77.2.2"
    assert qemucmd.guest_mac(2, 2) == "52:54:00:6d:02:02"


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        qemucmd.build_command(spec(tmp_path, backend="hmem"))


# ---- parsing and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n", (10, 0, 2)),
        ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)", (7, 2, 22)),
        ("QEMU emulator version 8.1\n", (8, 1, 0)),
    ],
)
def test_qemu_version_parsing(text: str, want: tuple[int, int, int]) -> None:
    assert qemucmd.parse_qemu_version(text) == want


def test_qemu_version_garbage() -> None:
    with pytest.raises(ValueError):
        qemucmd.parse_qemu_version("qemu-system-x86_64: command not found")


def test_old_qemu_is_refused_for_cxl_only(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    fake.chmod(0o755)
    with pytest.raises(BadInput, match=r"is 7\.2\.22; the cxl backend needs >= 8\.1"):
        harness.find_qemu(str(fake), "cxl")
    assert harness.find_qemu(str(fake), "nvdimm")[1] == (7, 2, 22)
    with pytest.raises(BadInput, match="not found"):
        harness.find_qemu(str(tmp_path / "absent"), "cxl")


@pytest.mark.parametrize(
    ("text", "want"), [("512M", 512 << 20), ("1G", 1 << 30), ("1536m", 1536 << 20), ("4096", 4096)]
)
def test_sizes(text: str, want: int) -> None:
    assert qemucmd.parse_size(text) == want


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--hosts", "0"], "choose 1..8"),
        (["--hosts", "9"], "choose 1..8"),
        (["--shared-size", "300M"], "multiple of 256M"),
        (["--shared-size", "8G"], "at most 4G"),
        (["--backend", "nvdimm", "--shared-size", "3M"], "multiple of 2M"),
        (["--mem", "lots"], "bad size"),
        (["--mem", "128M"], "at least 256M"),
        (["--nvdimm-label-size", "128K"], "nvdimm backend only"),
        (["--backend", "nvdimm", "--nvdimm-label-size", "64K"], "at least 128K"),
    ],
)
def test_bad_arguments_are_one_clear_error(argv: list[str], match: str) -> None:
    with pytest.raises(BadInput, match=match):
        harness.parse_args(argv)


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as e:
        harness.parse_args(["--backend", "hmem"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        harness.parse_args(["--suite", "tests/vm", "--cmd", "true"])


def test_defaults_depend_on_backend() -> None:
    assert harness.parse_args([]).shared_size == 512 << 20
    cfg = harness.parse_args(["--backend", "nvdimm", "--hosts", "1"])
    assert cfg.shared_size == 1 << 30 and cfg.hosts == 1 and cfg.hide_hypervisor


def test_default_modules_sit_next_to_a_debian_vmlinuz(tmp_path: Path) -> None:
    v = "7.3.4+deb13-amd64"
    assert harness.default_modules_for(tmp_path / v / "vmlinuz", v) == tmp_path / v
    with pytest.raises(BadInput, match="pass --modules"):
        harness.default_modules_for(tmp_path / "arch/x86/boot/bzImage", v)


def test_kvm_probe_decisions() -> None:
    assert harness.kvm_probe_verdict is qemucmd.kvm_probe_verdict
    ok, why = qemucmd.kvm_probe_verdict(0, "...\nmhd-init: MHD-PROBE-OK\n", False)
    assert ok
    ok, why = qemucmd.kvm_probe_verdict(1, "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0", False)
    assert not ok and "MSR" in why
    ok, why = qemucmd.kvm_probe_verdict(None, "KVM internal error. Suberror: 1\nemulation failure", True)
    assert not ok and "KVM internal error" in why
    ok, why = qemucmd.kvm_probe_verdict(None, "Decompressing Linux...", True)
    assert not ok and "in time" in why
    ok, why = qemucmd.kvm_probe_verdict(0, "", False)
    assert not ok and "exited with 0" in why


def test_kvm_probe_without_dev_kvm_access(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness.os, "access", lambda p, m: False)
    assert harness.probe_kvm("qemu", tmp_path, tmp_path, tmp_path) == (False, "/dev/kvm not accessible")


# ---- resources, busy files, results ------------------------------------------------------------


def test_memory_check_names_the_numbers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert harness.meminfo_available_mb("MemTotal: 1 kB\nMemAvailable:  2097152 kB\n") == 2048
    cfg = harness.parse_args(["--hosts", "2", "--mem", "1G"])
    real_read = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: (
            "MemAvailable: 1048576 kB\n" if str(self) == "/proc/meminfo" else real_read(self, *a, **k)
        ),
    )
    with pytest.raises(BadInput, match=r"not enough memory: 2 guests x 1024M .* 1024M available"):
        harness.check_resources(cfg, tmp_path, tmp_path / "results")


def test_busy_shared_file_is_found_through_proc(tmp_path: Path) -> None:
    f = tmp_path / "shared.raw"
    f.write_bytes(b"\0" * 4096)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; f=open(sys.argv[1]); print(1, flush=True); time.sleep(30)",
            str(f),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        proc.stdout.readline()
        users = harness.proc_users(f)
        assert proc.pid in [pid for pid, _ in users]
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in [pid for pid, _ in harness.proc_users(f)]


def test_busy_file_seen_through_a_mapping(tmp_path: Path) -> None:
    fake = tmp_path / "proc"
    (fake / "4242" / "fd").mkdir(parents=True)
    (fake / "4242" / "comm").write_text("qemu-system-x86\n")
    target = os.path.realpath(tmp_path / "shared.raw")
    (fake / "4242" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:1a 99   {target}\n")
    (fake / "self").mkdir()
    assert harness.proc_users(tmp_path / "shared.raw", fake) == [(4242, "qemu-system-x86")]


def test_suite_split(tmp_path: Path) -> None:
    (tmp_path / "tests/vm/guest").mkdir(parents=True)
    (tmp_path / "tests/vm/test_crosshost.py").write_text("")
    (tmp_path / "tests/vm/guest/test_modes.py").write_text("")
    assert suites.split_suite("tests/vm", tmp_path) == (["tests/vm/guest"], ["tests/vm/test_crosshost.py"])
    assert suites.split_suite("tests/vm/guest", tmp_path) == (["tests/vm/guest"], [])
    assert suites.split_suite("tests/vm/guest/test_modes.py", tmp_path) == (
        ["tests/vm/guest/test_modes.py"],
        [],
    )
    assert suites.split_suite("tests/vm/test_crosshost.py", tmp_path) == ([], ["tests/vm/test_crosshost.py"])
    with pytest.raises(BadInput, match="no such file"):
        suites.split_suite("tests/nothere", tmp_path)


# ---- initramfs ---------------------------------------------------------------------------------


def test_cpio_newc_layout(tmp_path: Path) -> None:
    w = initramfs.CpioWriter()
    w.directory("bin")
    w.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    w.file("odd", b"x" * 5)
    data = w.finish()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    # Walk the newc headers the way the kernel's unpacker does.
    names, off = [], 0
    while True:
        hdr = data[off : off + 110]
        namesize = int(hdr[94:102], 16)
        filesize = int(hdr[54:62], 16)
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        names.append((name, filesize))
        off += 110 + namesize
        off += -off % 4
        off += filesize
        off += -off % 4
        if name == "TRAILER!!!":
            break
    assert names == [("bin", 0), ("bin/hello", 18), ("odd", 5), ("TRAILER!!!", 0)]
    assert off == len(data)


def test_modules_are_decompressed(tmp_path: Path) -> None:
    raw = b"\x7fELF" + b"\0" * 60
    (tmp_path / "a.ko.xz").write_bytes(lzma.compress(raw))
    (tmp_path / "b.ko").write_bytes(raw)
    assert initramfs.decompress_module(tmp_path / "a.ko.xz") == raw
    assert initramfs.decompress_module(tmp_path / "b.ko") == raw
    (tmp_path / "c.ko.bz2").write_bytes(b"")
    with pytest.raises(BadInput):
        initramfs.decompress_module(tmp_path / "c.ko.bz2")


# ---- warm forks: deciding (pure) ---------------------------------------------------------------


@pytest.fixture
def vbin(tmp_path: Path) -> Path:
    """A fake venv bin directory: interpreters, a console script, a script for another python."""
    b = tmp_path / "venv" / "bin"
    b.mkdir(parents=True)
    for name, text in {
        "python": "",
        "python3": "",
        "python3.11": "",
        "daxmode": f"#!{b}/python3\nimport sys\n",
        "unbuf": f"#!{b}/python3 -u\n",
        "isolated": f"#!{b}/python3 -I\n",
        "systool": "#!/usr/bin/python3\n",
    }.items():
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return b


def launch(b: Path, argv: list[str], env: dict[str, str] | None = None, startup=None):  # type: ignore[no-untyped-def]
    env = {"PATH": f"{b}:/usr/bin:/bin"} if env is None else env
    return warm.parse_launch(argv, env, bin_dir=str(b), startup_env=startup or {})


def test_interpreter_module_code_and_script_launches(vbin: Path) -> None:
    m = launch(vbin, [f"{vbin}/python", "-m", "pytest", "-q", "x"])
    assert (m.kind, m.target, m.argv) == ("module", "pytest", ["<module>", "-q", "x"])
    c = launch(vbin, [f"{vbin}/python3", "-c", "print(1)", "a"])
    assert (c.kind, c.target, c.argv) == ("code", "print(1)", ["-c", "a"])
    s = launch(vbin, [f"{vbin}/python3.11", "tool.py", "--flag"])
    assert (s.kind, s.target, s.argv) == ("path", "tool.py", ["tool.py", "--flag"])
    assert launch(vbin, [f"{vbin}/python", "-mpytest"]).target == "pytest"
    assert launch(vbin, ["python", "-c", "pass"]).kind == "code"  # found through PATH
    assert launch(vbin, ["python", "-c", "pass"]).command == ("python", "-c", "pass")


def test_console_script_runs_through_its_shebang(vbin: Path) -> None:
    d = launch(vbin, ["daxmode", "set", "dax0.0", "devdax"])
    assert (d.kind, d.target, d.argv) == (
        "path",
        f"{vbin}/daxmode",
        [f"{vbin}/daxmode", "set", "dax0.0", "devdax"],
    )
    assert launch(vbin, [f"{vbin}/unbuf"]).unbuffered
    assert launch(vbin, [f"{vbin}/isolated"]) is None  # -I changes start-up
    assert launch(vbin, [f"{vbin}/systool"]) is None  # the system's python is not this interpreter


@pytest.mark.parametrize(
    "argv",
    [
        ["@/python"],  # interactive
        ["@/python", "-"],  # program on stdin
        ["@/python", "-X", "importtime", "-c", "pass"],
        ["@/python", "-O", "x.py"],
        ["@/python", "-I", "-c", "pass"],
        ["@/python", "-W", "error", "-c", "pass"],
        ["@/python", "-c"],
        ["/root/.pyenv/versions/3.11.7/bin/python3.11", "-c", "pass"],  # the venv's base: not the venv
        ["./python", "-c", "pass"],  # relative to a cwd the child has not entered yet
        ["echo", "hi"],
        ["no-such-program-t"],
        [],
    ],
)
def test_what_needs_a_real_exec(vbin: Path, argv: list[str]) -> None:
    assert launch(vbin, [a.replace("@", str(vbin)) for a in argv]) is None


def test_interpreter_flags_and_python_variables(vbin: Path) -> None:
    py = f"{vbin}/python"
    env = {"PATH": "/bin"}
    f = launch(vbin, [py, "-uB", "-P", "-c", "pass"])
    assert f.unbuffered and f.dont_write_bytecode and f.safe_path
    e = launch(vbin, [py, "-c", "pass"], {**env, "PYTHONPATH": "/a:/b", "PYTHONDONTWRITEBYTECODE": "1"})
    assert e.pythonpath == ("/a", "/b") and e.dont_write_bytecode is True
    assert launch(vbin, [py, "-c", "pass"]).dont_write_bytecode is None
    # start-up-only variables must match this interpreter's
    assert launch(vbin, [py, "-c", "pass"], {**env, "PYTHONHASHSEED": "0"}) is None
    assert launch(vbin, [py, "-c", "pass"], env, startup={"PYTHONHASHSEED": "0"}) is None
    assert launch(vbin, [py, "-c", "pass"], {**env, "PYTHONHASHSEED": "0"}, startup={"PYTHONHASHSEED": "0"})


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        ("daxmode set dax0.0 devdax", ["daxmode", "set", "dax0.0", "devdax"]),
        ("  a   'b c'  \"d e\" f\\ g ", ["a", "b c", "d e", "f g"]),
        ("py -c 'import x; print(x[1] * 2)  # $HOME'", ["py", "-c", "import x; print(x[1] * 2)  # $HOME"]),
        ("a ''", ["a", ""]),
        ("a b=c", ["a", "b=c"]),
        ("a|b", None),
        ("a > f", None),
        ("a; b", None),
        ("a && b", None),
        ("echo $HOME", None),
        ('echo "$HOME"', None),
        ("echo `id`", None),
        ("ls *.py", None),
        ("cd ~", None),
        ("a # comment", None),
        ("X=1 a", None),
        ("a\nb", None),
        ("a 'unterminated", None),
        ("(a)", None),
        ("", None),
    ],
)
def test_simple_command(cmd: str, words: list[str] | None) -> None:
    assert shwords.simple_command(cmd) == words


def test_sh_c_of_one_python_command_is_seen_through(vbin: Path) -> None:
    env = {"PATH": f"{vbin}:/bin"}
    kw = {"bin_dir": str(vbin), "startup_env": {}}
    words, got = warm.launch_for(["/bin/sh", "-c", "daxmode list --json"], env, **kw)
    assert words == ["daxmode", "list", "--json"] and got is not None and got.kind == "path"
    for argv in (["sh", "-c", "daxmode list | wc -l"], ["sh", "-c", "echo hi"], ["sh", "-c", "daxmode", "x"]):
        assert warm.launch_for(argv, env, **kw)[1] is None


def test_sys_path_as_a_fresh_interpreter_builds_it(tmp_path: Path) -> None:
    base = ["/std", "/site"]
    m = warm.Launch("module", "pytest", pythonpath=("/pp",))
    assert warm.sys_path_for(m, "/cwd", base) == ["/cwd", "/pp", "/std", "/site"]
    assert warm.sys_path_for(warm.Launch("code", "pass"), "/cwd", base) == ["", "/std", "/site"]
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "s.py").write_text("")
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "s.py")
    p = warm.Launch("path", "link.py")
    assert warm.sys_path_for(p, str(tmp_path), base)[0] == str(tmp_path / "real")  # symlink resolved
    assert warm.sys_path_for(warm.Launch("path", "x.py", safe_path=True), "/cwd", base) == base


@pytest.mark.parametrize(
    ("code", "want"),
    [(None, (0, None)), (3, (3, None)), (256 + 7, (7, None)), (True, (1, None)), ("boom", (1, "boom"))],
)
def test_exit_status_like_the_interpreter(code: object, want: tuple[int, str | None]) -> None:
    assert warm.exit_status(code) == want


def test_preload_names_keep_only_requirements_the_project_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("import click\nfrom .b import x\ndef f():\n    import pyudev.core\n")
    (pkg / "sub" / "c.py").write_text("from json import dumps\n")
    (pkg / "bad.py").write_text("def (:\n")
    assert warm.imported_names(str(pkg)) >= {"click", "pyudev", "json"}
    names = warm.preload_names("daxmode", {"click"})
    assert names[0] == "daxmode" and "click" in names and "pyudev" not in names
    assert "pytest" in names and "_pytest" in names
    everything = warm.preload_names("daxmode")
    assert "click" in everything and "pyudev" in everything
    # A test extra (pyroute2) is never preloaded: the guests' daxmode does not import it.
    assert "pyroute2" not in everything


def test_preload_imports_submodules_but_never_a_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "warmpkg_t"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("X = 1\n")
    (pkg / "broken.py").write_text("raise RuntimeError('nope')\n")
    (pkg / "__main__.py").write_text("raise SystemExit('ran the program')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rep = warm.preload(["warmpkg_t", "no_such_module_t"], walk=("warmpkg_t",))
    assert "warmpkg_t.one" in sys.modules and "warmpkg_t.__main__" not in sys.modules
    assert any("warmpkg_t.broken" in f for f in rep["failed"]) and any(
        "no_such_module_t" in f for f in rep["failed"]
    )
    import gc

    gc.unfreeze()


# ---- warm forks: running (real forks, from a pristine zygote and from this process) -----------

VENV_BIN = Path(sys.executable).parent
DAXMODE_SCRIPT = VENV_BIN / "daxmode"


@pytest.fixture(scope="module")
def zygote_at(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A fresh interpreter preloaded like a guest's agent, serving the zygote protocol."""
    sock = tmp_path_factory.mktemp("zygote") / "warm.sock"
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "qemu"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhd.zygote", str(sock), "daxmode", "click", "pytest"],
        stdout=subprocess.PIPE, env=env, cwd=PROJECT, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip().isdigit()
    yield str(sock)
    proc.kill()
    proc.wait()


def cold(argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def hot(zsock: str, argv: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """Like ``cold`` but through the zygote hook; asserts the command really was forked warm."""
    before = warm.stats["warm"]
    with zygote.install_popen_hook(zsock):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert warm.stats["warm"] == before + 1, "not forked warm"
    return r


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "import sys; print(sys.argv, sys.path[0] == ''); sys.exit(7)", "a", "b"],
        ["-c", "import sys; print('to stderr', file=sys.stderr); raise SystemExit('bye')"],
        ["-c", "def f():\n    1 / 0\nf()"],
        ["-c", "print(__name__, __file__ if '__file__' in dir() else None)"],
        ["-m", "json.tool", "--sort-keys"],
        ["-m", "no_such_module_t"],
        ["-m", "daxmode", "--version"],
        ["-m", "daxmode", "set"],
        ["-m", "daxmode.sizes"],
        ["/nonexistent/script.py"],
        ["-u", "-c", "import sys; sys.stdout.write('x'); sys.stderr.write('y')"],
    ],
)
def test_a_warm_fork_behaves_like_a_new_interpreter(zygote_at: str, argv: list[str]) -> None:
    full = [sys.executable, *argv]
    kw = {"input": '{"b": 1, "a": 2}'} if "json.tool" in argv else {}
    want, got = cold(full, **kw), hot(zygote_at, full, **kw)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_console_script_and_sh_c_forked_like_a_new_process(zygote_at: str) -> None:
    from click.testing import CliRunner

    from daxmode.cli import main

    # Using the CLI in this process first changes click's state (version_option keeps the first
    # program name it sees): a fork of this process would print "main, version"; the zygote's do not.
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    for argv in ([str(DAXMODE_SCRIPT), "--version"], ["sh", "-c", f"{DAXMODE_SCRIPT} set nope"]):
        want, got = cold(argv), hot(zygote_at, argv)
        assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)


def test_fork_gets_env_cwd_and_fds_as_an_exec_would(zygote_at: str, tmp_path: Path) -> None:
    code = "import os, json; print(json.dumps([dict(os.environ), os.getcwd(), os.listdir('/proc/self/fd')]))"
    with open(tmp_path / "kept", "w") as kept, open(tmp_path / "closed", "w") as closed:
        os.set_inheritable(kept.fileno(), True)
        os.set_inheritable(closed.fileno(), True)
        kw = {"env": {"ONLY": "this"}, "cwd": tmp_path, "pass_fds": (kept.fileno(),)}
        r = hot(zygote_at, [sys.executable, "-c", code], **kw)
        env, cwd, fds = json.loads(r.stdout)
        assert env == {"ONLY": "this"} and cwd == str(tmp_path)
        assert str(kept.fileno()) in fds and str(closed.fileno()) not in fds
    with pytest.raises(FileNotFoundError):
        hot(zygote_at, [sys.executable, "-c", "pass"], cwd=tmp_path / "absent")


def test_popen_returns_at_once_and_signals_reach_the_child(zygote_at: str) -> None:
    code = "import time; print('up', flush=True); time.sleep(60)"
    with zygote.install_popen_hook(zygote_at):
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"up\n" and time.monotonic() - t0 < 30
        assert p.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(0.2)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == -signal.SIGTERM
        p.stdout.close()
        # Ctrl-C: KeyboardInterrupt, then death by SIGINT like CPython (the parent sees -2)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"up\n"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGINT and b"KeyboardInterrupt" in err
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-c", code], timeout=0.5)


def test_fork_runs_its_own_atexit_not_the_parents(tmp_path: Path) -> None:
    import atexit

    flag = tmp_path / "parent-handler"

    def parents() -> None:
        flag.write_text("ran")

    atexit.register(parents)
    try:
        code = "import atexit; atexit.register(print, 'own handler')"
        r = warm.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.stdout == "own handler\n" and not flag.exists()
    finally:
        atexit.unregister(parents)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_fork_drops_privileges(zygote_at: str) -> None:
    code = "import os; print(os.getuid(), os.getgid(), os.getgroups())"
    got = hot(zygote_at, [sys.executable, "-c", code], user=65534, group=65534, extra_groups=[])
    assert got.stdout == "65534 65534 []\n"

    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    assert warm.run([sys.executable, "-c", code], preexec_fn=drop, capture_output=True, text=True).stdout == (
        "65534 65534 []\n"
    )


def test_hook_execs_what_it_cannot_fork_and_can_be_suspended(zygote_at: str) -> None:
    w, e = warm.stats["warm"], warm.stats["exec"]
    with zygote.install_popen_hook(zygote_at):
        assert subprocess.check_output(["echo", "hi"], text=True) == "hi\n"
        assert subprocess.run([sys.executable, "-c", "pass"], preexec_fn=os.getpid).returncode == 0
        with warm.suspended():
            assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0
        assert (
            subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
            == "42\n"
        )
    assert subprocess.Popen is not zygote.ZygotePopen
    assert warm.stats["warm"] == w + 1 and warm.stats["exec"] == e + 3


# ---- verdicts: declared skips -------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="6">
<testcase classname="tests.vm.guest.test_modes" name="test_ok" file="tests/vm/guest/test_modes.py"
  time="1.5"/>
<testcase classname="tests.vm.guest.test_modes.TestGroup" name="test_in_class[cxl]"
  file="tests/vm/guest/test_modes.py" time="0.1">
  <skipped type="pytest.skip" message="needs DAXMODE_VM_ONLINE_OK=1 here">skip</skipped></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_bad" file="tests/vm/guest/test_ops.py" time="2">
  <failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_teardown" file="tests/vm/guest/test_ops.py" time="2">
  <error message="failed on teardown">trace</error></testcase>
<testcase classname="" name="tests.vm.guest.test_broken" time="0">
  <error message="collection failure">x</error></testcase>
<testcase classname="tests.vm.guest.test_ops" name="test_skip" file="tests/vm/guest/test_ops.py" time="0">
  <skipped message="no udevd in this guest"/></testcase>
</testsuite></testsuites>"""


def test_junit_cases_rebuild_node_ids_and_outcomes() -> None:
    got = [(c.nodeid, c.outcome) for c in verdict.junit_cases(JUNIT)]
    assert got == [
        ("tests/vm/guest/test_modes.py::test_ok", "passed"),
        ("tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]", "skipped"),
        ("tests/vm/guest/test_ops.py::test_bad", "failed"),
        ("tests/vm/guest/test_ops.py::test_teardown", "error"),
        ("tests.vm.guest.test_broken", "error"),
        ("tests/vm/guest/test_ops.py::test_skip", "skipped"),
    ]
    assert verdict.junit_cases(JUNIT)[1].message == "needs DAXMODE_VM_ONLINE_OK=1 here"


DECLS = """
[[skip]]
test = "test_modes.py::TestGroup::test_in_class"
when = { online_ok = false }
message = "DAXMODE_VM_ONLINE_OK"
because = "memory is never onlined there"

[[skip]]
test = "test_ops.py::*"
when = { udev = false, backend = ["cxl", "nvdimm"] }
because = "no udevd"
"""


def facts_for(**kw) -> dict:  # type: ignore[no-untyped-def]
    return {
        "backend": "cxl",
        "hosts": 2,
        "online_ok": False,
        "udev": True,
        "kernel": "7.3.4+deb13-amd64",
        **kw,
    }


def test_a_skip_is_expected_only_under_its_facts_and_message() -> None:
    decls = verdict.parse_declarations(DECLS, "tests/vm/guest", "x.toml")
    cases = verdict.junit_cases(JUNIT)
    j = verdict.judge("host0", cases, decls, facts_for())
    assert [c.nodeid for c, _ in j.expected] == [
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]"
    ]
    assert [c.nodeid for c in j.unexpected] == ["tests/vm/guest/test_ops.py::test_skip"]  # udev is there
    j2 = verdict.judge("host0", cases, decls, facts_for(udev=False, online_ok=True))
    assert [c.nodeid for c in j2.unexpected] == [
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class[cxl]"
    ]
    other = verdict.Case(
        "tests/vm/guest/test_modes.py::TestGroup::test_in_class", "skipped", "something else"
    )
    assert verdict.judge("h", [other], decls, facts_for()).unexpected == [other]  # message must match
    elsewhere = verdict.Case(
        "tests/other/test_modes.py::TestGroup::test_in_class", "skipped", "DAXMODE_VM_ONLINE_OK"
    )
    assert verdict.judge("h", [elsewhere], decls, facts_for()).unexpected == [elsewhere]  # another directory


def test_facts_match_types_lists_and_globs() -> None:
    assert verdict.facts_hold({"kernel": "7.3.*"}, facts_for())
    assert not verdict.facts_hold({"kernel": "6.*"}, facts_for())
    assert verdict.facts_hold({"backend": ["nvdimm", "cxl"]}, facts_for())
    assert not verdict.facts_hold({"hosts": True}, facts_for(hosts=1))  # True is not 1
    assert not verdict.facts_hold({"udev": False}, {})  # an unknown fact holds nothing


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[skip]]\ntest = "a.py::t"\nbecause = "x"\n', "non-empty when"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = {}\nbecause = "x"\n', "non-empty when"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { kernal = "7" }\nbecause = "x"\n', "unknown fact 'kernal'"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { hosts = "2" }\nbecause = "x"\n', "hosts takes a int"),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\n', "needs because"),
        (
            '[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\nbecause = "x"\nmessage = "("\n',
            "bad message regex",
        ),
        ('[[skip]]\ntest = "a.py::t"\nwhen = { udev = false }\nbecause = "x"\nreason = "y"\n', "unknown key"),
        ('[[skip]]\nwhen = { udev = false }\nbecause = "x"\n', "needs test"),
        ("[skips]\n", "unknown table"),
        ("[[skip]\n", "x.toml"),
    ],
)
def test_malformed_declarations_are_refused(text: str, match: str) -> None:
    with pytest.raises(verdict.DeclarationError, match=match):
        verdict.parse_declarations(text, "tests/vm", "x.toml")


def test_run_verdict_fails_on_failures_unexpected_skips_empty_parts_and_nothing_passed() -> None:
    ok = verdict.Case("a.py::t", "passed")
    skipped = verdict.Case("a.py::s", "skipped", "why")
    good = verdict.judge("p", [ok], [], {})
    assert verdict.run_verdict([good]) == (True, [])
    bad, why = verdict.run_verdict([verdict.judge("p", [ok, skipped], [], {})])
    assert not bad and why == ["p: UNEXPECTED SKIP a.py::s: why"]
    bad, why = verdict.run_verdict([good, verdict.judge("q", [], [], {})])
    assert not bad and why == ["q: no tests collected"]
    decl = verdict.parse_declarations('[[skip]]\ntest="a.py::s"\nwhen={udev=false}\nbecause="b"\n', "", "x")
    only_skips = verdict.judge("p", [skipped], decl, {"udev": False})
    assert not only_skips.unexpected
    bad, why = verdict.run_verdict([only_skips])
    assert not bad and why == ["no test passed: every test was skipped or none ran"]
    bad, why = verdict.run_verdict(
        [verdict.judge("p", [ok, verdict.Case("a.py::f", "error", "boom")], [], {})]
    )
    assert not bad and why == ["p: ERROR a.py::f: boom"]


def test_the_suites_declarations_parse_and_name_tests_that_exist() -> None:
    import ast
    import fnmatch

    decls = verdict.load_declarations(PROJECT, [PROJECT / "tests" / "vm"])
    assert len(decls) >= 5
    for d in decls:
        file, _, name = d.test.partition("::")
        path = PROJECT / d.base / file
        assert path.is_file(), f"{d.where}: {path} does not exist"
        funcs = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
        assert any(fnmatch.fnmatchcase(f, name) for f in funcs if f.startswith("test")), (
            f"{d.where}: no {name}"
        )


# ---- identity, timing, facts, suites, network, KVM cache ----------------------------------------


def test_identities_are_distinct_per_guest_and_famfs_shaped() -> None:
    import random
    import uuid

    ids = identity.identities(3)
    assert len({i.machine_id for i in ids}) == len({i.system_uuid for i in ids}) == 3
    assert all(len(i.machine_id) == 32 and str(uuid.UUID(i.system_uuid)) == i.system_uuid for i in ids)
    assert [i.hostname for i in ids] == ["daxmode-host0", "daxmode-host1", "daxmode-host2"]
    assert identity.identities(2, random.Random(1)) == identity.identities(2, random.Random(1))
    assert ids[1].env()["DAXMODE_VM_SYSTEM_UUID"] == ids[1].system_uuid


def test_masked_paths_cover_the_host_specific_state() -> None:
    env = identity.mask_env()
    for p in ("/opt/famfs", "/etc/machine-id", "/etc/daxmode.d", "/etc/daxctl.conf.d", "/etc/udev/rules.d"):
        assert p in env.split()
    for bad in (("relative",), ("/a b",), ("/etc/../x",)):
        with pytest.raises(ValueError):
            identity.mask_env(bad)


def test_decoys_would_change_a_verdict_if_a_guest_saw_them() -> None:
    import fnmatch
    import tomllib

    d = identity.identities(1)[0]
    files = identity.decoy_files(d)
    assert files["/opt/famfs/system_uuid"] == d.system_uuid + "\0"  # famfs's format: 36 chars and NUL
    assert files["/etc/machine-id"] == d.machine_id + "\n"
    # every decoy lies under a path the guests mask
    assert all(any(p == m or p.startswith(m + "/") for m in identity.MASKED) for p in files)
    # the daxmode.d decoy asks for system-ram on every dax device (the guest test applies it)
    (rule,) = tomllib.loads(files["/etc/daxmode.d/00-mhd-host-decoy.toml"])["device"]
    assert rule["mode"] == "system-ram" and fnmatch.fnmatchcase("dax0.0", rule["match"]["name"])
    assert identity.DECOY_UDEV_MARKER in files["/etc/udev/rules.d/00-mhd-host-decoy.rules"]


def test_planting_skips_directories_that_hold_the_run() -> None:
    prot = [Path("/opt/checkout"), Path("/work/results")]
    assert identity.plant_tops(("/etc", "/opt"), prot, exists=lambda p: True) == ["/etc"]
    assert identity.plant_tops(("/etc", "/opt"), [Path("/work")], exists=lambda p: p == "/etc") == ["/etc"]


@pytest.mark.skipif(os.geteuid() != 0, reason="planting needs root (a private mount namespace)")
def test_planted_state_is_seen_inside_the_namespace_only(tmp_path: Path) -> None:
    before = Path("/etc/machine-id").read_bytes() if Path("/etc/machine-id").exists() else None
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
        "from mhd import identity;"
        "d = identity.identities(1)[0];"
        "planted, note = identity.plant_host_state(Path(sys.argv[2]), d, [Path(sys.argv[2])]);"
        "print(json.dumps([planted, note, d.machine_id, Path('/etc/machine-id').read_text(),"
        " Path('/etc/daxmode.d/00-mhd-host-decoy.toml').exists()]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(PROJECT / "qemu"), str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    planted, note, mid, seen, rule = json.loads(r.stdout)
    if not planted:
        pytest.skip(note)
    assert seen == mid + "\n" and rule and "/etc/machine-id" in planted
    after = Path("/etc/machine-id").read_bytes() if Path("/etc/machine-id").exists() else None
    assert after == before and not Path("/etc/daxmode.d/00-mhd-host-decoy.toml").exists()


def test_timing_table_lists_phases_load_and_total() -> None:
    now = [100.0]
    t = timing.Timing(clock=lambda: now[0], load_start="1.50")
    with t.phase("boot") as p:
        now[0] += 20.0
        p.detail = "host0 19.5"
    t.add("teardown", 1.25, "parallel poweroff")
    now[0] += 2.0
    t.load_end = "1.80"
    table = t.table()
    assert "load average 1.50 at start, 1.80 at end" in table
    assert "  boot        20.0  host0 19.5" in table and "  teardown     1.2  parallel poweroff" in table
    assert table.splitlines()[-1].split() == ["total", "22.0"]
    assert json.loads(t.to_json())["phases"][0] == {"name": "boot", "seconds": 20.0, "detail": "host0 19.5"}


def test_boot_marks_become_a_breakdown() -> None:
    marks = timing.boot_marks("init 4.5\nstage2 6.7\nudev 7.8\nagent 8.1\nwarm 14.0\njunk\ninit 99\n")
    assert marks["init"] == 4.5  # the first mark of a name counts
    assert timing.boot_detail(marks) == "kernel 4.5, init 2.2, udev 1.1, setup 0.3, warm-up 5.9"
    assert timing.boot_detail({"init": 3.0}) == "kernel 3.0"


def test_kernel_facts_from_config_or_kallsyms(tmp_path: Path) -> None:
    cfg = facts.parse_config("CONFIG_FUSE_FS=y\n# CONFIG_FUSE_FAMFS_DAX is not set\nCONFIG_X=m\n")
    assert cfg == {"CONFIG_FUSE_FS": "y", "CONFIG_X": "m"}
    assert not facts.has_fuse_famfs(cfg, b"ffff famfs_fuse_x\n")  # the config is decisive
    assert facts.has_fuse_famfs({**cfg, "CONFIG_FUSE_FAMFS_DAX": "y"}, None)
    assert facts.has_fuse_famfs(None, b"ffffffff t famfs_file_init\n")
    assert not facts.has_fuse_famfs(None, None)
    rel = "6.14.11-famfs"
    tree = tmp_path / "lib/modules" / rel
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/fs/famfs/famfsv1.ko.xz: kernel/fs/dax.ko\n")
    assert facts.has_famfsv1(rel, str(tmp_path)) and not facts.has_famfsv1("other", str(tmp_path))
    (tree / "config").write_text("CONFIG_FUSE_FS=y\nCONFIG_FUSE_FAMFS_DAX=y\n")
    assert facts.kernel_config(rel, str(tmp_path))["CONFIG_FUSE_FAMFS_DAX"] == "y"
    got = facts.gather()
    assert set(got) == {"kernel", "fuse_famfs", "famfsv1", "fsdev", "udev", "daxctl", "famfs_tools"}
    assert set(got) <= set(verdict.FACTS)


def test_guest_pytest_argv_and_collect_count() -> None:
    argv = suites.pytest_argv("/v/python", "/p", ["tests/vm/guest"], "/run/j.xml", "not shared_media")
    assert argv[:3] == ["/v/python", "-m", "pytest"] and argv[-3:] == [
        "-m",
        "not shared_media",
        "tests/vm/guest",
    ]
    assert "junit_family=xunit1" in argv and "--junitxml=/run/j.xml" in argv
    assert suiterun.deselected("....s\n22 passed, 3 skipped, 2 deselected in 30.0s\n") == 2
    assert suiterun.deselected("22 passed in 30.0s\n") == 0


def test_media_digest_sees_any_change(tmp_path: Path) -> None:
    f = tmp_path / "m.raw"
    with open(f, "wb") as fh:
        fh.truncate(16 << 20)
    a = suites.media_digest(f)
    with open(f, "r+b") as fh:
        fh.seek(9 << 20)
        fh.write(b"\1")
    assert suites.media_digest(f) != a


def test_guest_network_batch() -> None:
    by_mac = {guestnet.mac(1, 1): "eth0", guestnet.mac(0, 2): "mhd2"}
    assert guestnet.batch(1, [1], by_mac) == [
        "link set dev lo up",
        "link set dev eth0 down",
        "link set dev eth0 name mhd1",
        "link set dev mhd1 up",
        "addr replace 10.77.1.2/24 dev mhd1",
    ]
    assert guestnet.batch(0, [2], by_mac)[1:] == [
        "link set dev mhd2 up",
        "addr replace 10.77.2.1/24 dev mhd2",
    ]


def test_kvm_verdict_is_cached_per_machine(tmp_path: Path) -> None:
    from mhd import preflight

    calls = []

    def probe() -> tuple[bool, str]:
        calls.append(1)
        return False, "KVM internal error"

    cache = tmp_path / "kvm.json"
    assert preflight.cached_kvm_probe(cache, "k1", probe) == (False, "KVM internal error", False)
    assert preflight.cached_kvm_probe(cache, "k1", probe) == (False, "KVM internal error", True)
    assert preflight.cached_kvm_probe(cache, "k2", probe)[2] is False and len(calls) == 2
    cache.write_text("{not json")
    assert preflight.cached_kvm_probe(cache, "k1", probe)[2] is False
    key = preflight.kvm_cache_key((10, 0, 2), "7.3.4 (x) #1", "model name\t: Some CPU\n")
    assert "10.0.2" in key and "Some CPU" in key and os.uname().release in key
    assert qemucmd.kvm_probe_decided("... KVM internal error. Suberror: 1")
    assert qemucmd.kvm_probe_decided("mhd-init: MHD-PROBE-OK") and not qemucmd.kvm_probe_decided("Booting")


def test_plain_pytest_collects_both_test_modes_modules() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:]
    assert "tests/test_modes.py::" in r.stdout and "tests/vm/guest/test_modes.py::" in r.stdout


def test_without_a_zygote_the_hook_execs(tmp_path: Path) -> None:
    assert zygote.compatible()
    e = warm.stats["exec"]
    with zygote.install_popen_hook(str(tmp_path / "absent.sock")):
        assert (
            subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"
        )
    assert warm.stats["exec"] == e + 1


# ---- shell words and the agent's pipelines -----------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "stages"),
    [
        ("a b | c > f", [(["a", "b"], None, None, False), (["c"], None, "f", False)]),
        ("a < in | b >> out", [(["a"], "in", None, False), (["b"], None, "out", True)]),
        ("> f a", [(["a"], None, "f", False)]),
        (
            "py -c 'x | y > z' | wc -l",
            [(["py", "-c", "x | y > z"], None, None, False), (["wc", "-l"], None, None, False)],
        ),
        ("a|b", [(["a"], None, None, False), (["b"], None, None, False)]),
        ("a 2>f", None),
        ("a>f", None),
        ("a >&2", None),
        ("a > f > g", None),
        ("a || b", None),
        ("a |& b", None),
        ("a | ", None),
        ("| a", None),
        ("a >", None),
        ("a << EOF", None),
        ("X=1 a | b", None),
        ("a; b | c", None),
        ("a | b &", None),
    ],
)
def test_pipelines_the_agent_runs_itself(cmd: str, stages) -> None:  # type: ignore[no-untyped-def]
    got = shwords.parse_pipeline(cmd)
    if stages is None:
        assert got is None
    else:
        assert [(s.words, s.stdin, s.stdout, s.append) for s in got] == stages


def test_agent_runs_sh_c_as_dash_does(tmp_path: Path) -> None:
    """Each command through the agent (forked warm where it can) and through /bin/sh: same result."""
    from mhd import agent

    py = sys.executable
    env = dict(agent.BASE_ENV, PATH=f"{VENV_BIN}:/usr/bin:/bin")
    out = tmp_path / "out.txt"
    (tmp_path / "in.txt").write_text("hello\n")
    cmds = [
        f"{py} -c 'print(12345)' | wc -c",
        f"{py} -c 'import sys; sys.stdout.write(sys.stdin.read().upper())' < {tmp_path}/in.txt | tr H J",
        f"{py} -c 'import os; os.kill(os.getpid(), 9)' | cat",
        f"{py} -c 'import os; os.kill(os.getpid(), 15)'",
        f"{py} -c 'import sys; print(\"e\", file=sys.stderr); sys.exit(3)' | cat",
        f"{py} -c 'import sys; sys.stdout.write(\"x\" * 200000)' | head -c 5",
        f"yes | {py} -c 'import sys; sys.stdin.read(10)'",
        f"nosuchprog-t | {py} -c pass",
        f"{py} -c pass > /nonexistent/dir/x",
        f"{DAXMODE_SCRIPT} --version | cat",
    ]
    warmed = 0
    for cmd in cmds:
        got = agent.run_command({"sh": cmd, "timeout": 60}, env)
        want = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
        assert (got["rc"], got["stdout"], got["stderr"]) == (want.returncode, want.stdout, want.stderr), cmd
        warmed += got["warm"]
    assert warmed == 8  # a missing program and an unopenable file go to sh, which says so itself
    r = agent.run_command({"sh": f"{py} -c 'print(1)' > {out}", "timeout": 60}, env)
    assert r["rc"] == 0 and r["warm"] and out.read_text() == "1\n"
    r = agent.run_command({"sh": f"{py} -c 'print(2)' >> {out}", "timeout": 60}, env)
    assert out.read_text() == "1\n2\n"
    r = agent.run_command({"sh": f"{py} -c 'import time; time.sleep(30)' | cat", "timeout": 0.5}, env)
    assert r["timed_out"]


def test_zygote_reports_sh_c_as_dash_does(zygote_at: str) -> None:
    cmd = f"{sys.executable} -c 'import os; os.kill(os.getpid(), 15)'"
    want = cold(["/bin/sh", "-c", cmd])
    got = hot(zygote_at, ["/bin/sh", "-c", cmd])
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr) == (143, "Terminated\n")
    got = hot(zygote_at, ["bash", "-c", cmd])  # bash execs a lone command: the signal shows as such
    assert got.returncode == cold(["bash", "-c", cmd]).returncode == -15


def test_stage_reports_merge_into_one_guest_junit(tmp_path: Path) -> None:
    (tmp_path / "junit-parallel.xml").write_text(JUNIT)
    (tmp_path / "junit-shared_media.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="1"><testcase classname="tests.vm.guest.test_f" '
        'name="test_m" file="tests/vm/guest/test_f.py"/></testsuite></testsuites>'
    )
    (tmp_path / "junit-broken.xml").write_text("<testsuites")
    dest = tmp_path / "guest-junit.xml"
    verdict.merge_junit(sorted(tmp_path.glob("junit-*.xml")), dest)
    cases = verdict.junit_cases(dest.read_text())
    assert len(cases) == 7 and cases[-1].nodeid == "tests/vm/guest/test_f.py::test_m"
