"""The host half of the harness before anything boots: kernel identification, QEMU command lines,
options, resource and busy-file checks, the initramfs, the KVM probe and its cache (mhd.host)."""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mhd.host import (
    config,
    initramfs,
    kernel,
    preflight,
    prepare,
    qemucmd,
    suites,
)
from mhd.host.errors import BadInput

PROJECT = Path(__file__).resolve().parents[2]


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
    cfg = config.parse_args(["--backend", "nvdimm", "--nvdimm-label-size", "128K", "--no-second-nvdimm"])
    assert cfg.label_size == 128 << 10 and not cfg.second_nvdimm


def test_workspace_sizes_the_label_area_and_drops_the_second_nvdimm(tmp_path: Path) -> None:
    """--no-second-nvdimm: one backing file, label area included; the default keeps the second."""
    argv = ["--backend", "nvdimm", "--shared-size", "64M", "--no-plant"]
    one = prepare.Workspace(config.parse_args([*argv, "--nvdimm-label-size", "128K", "--no-second-nvdimm"]),
                            tmp_path, tmp_path)  # fmt: skip
    try:
        assert one.second_file is None
        assert [(p.stat().st_size, s) for p, s in one.shared_files()] == [((64 << 20) + (128 << 10),) * 2]
    finally:
        one.close()
    two = prepare.Workspace(config.parse_args(argv), tmp_path, tmp_path)
    try:
        assert [s for _, s in two.shared_files()] == [64 << 20, prepare.SECOND_NVDIMM_SIZE]
    finally:
        two.close()


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
        preflight.find_qemu(str(fake), "cxl")
    assert preflight.find_qemu(str(fake), "nvdimm")[1] == (7, 2, 22)
    with pytest.raises(BadInput, match="not found"):
        preflight.find_qemu(str(tmp_path / "absent"), "cxl")


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
        config.parse_args(argv)


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as e:
        config.parse_args(["--backend", "hmem"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        config.parse_args(["--suite", "tests/vm", "--cmd", "true"])


def test_defaults_depend_on_backend() -> None:
    assert config.parse_args([]).shared_size == 512 << 20
    cfg = config.parse_args(["--backend", "nvdimm", "--hosts", "1"])
    assert cfg.shared_size == 1 << 30 and cfg.hosts == 1 and cfg.hide_hypervisor


def test_default_modules_sit_next_to_a_debian_vmlinuz(tmp_path: Path) -> None:
    v = "7.3.4+deb13-amd64"
    assert preflight.default_modules_for(tmp_path / v / "vmlinuz", v) == tmp_path / v
    with pytest.raises(BadInput, match="pass --modules"):
        preflight.default_modules_for(tmp_path / "arch/x86/boot/bzImage", v)


def test_kvm_probe_decisions() -> None:
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
    monkeypatch.setattr(preflight.os, "access", lambda p, m: False)
    assert preflight.probe_kvm("qemu", tmp_path, tmp_path, tmp_path) == (False, "/dev/kvm not accessible")


# ---- resources, busy files, results ------------------------------------------------------------


def test_memory_check_names_the_numbers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert preflight.meminfo_available_mb("MemTotal: 1 kB\nMemAvailable:  2097152 kB\n") == 2048
    cfg = config.parse_args(["--hosts", "2", "--mem", "1G"])
    real_read = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: (
            "MemAvailable: 1048576 kB\n" if str(self) == "/proc/meminfo" else real_read(self, *a, **k)
        ),
    )
    with pytest.raises(BadInput, match=r"not enough memory: 2 guests x 1024M .* 1024M available"):
        preflight.check_resources(cfg, tmp_path, tmp_path / "results")


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
        users = preflight.proc_users(f)
        assert proc.pid in [pid for pid, _ in users]
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in [pid for pid, _ in preflight.proc_users(f)]


def test_busy_file_seen_through_a_mapping(tmp_path: Path) -> None:
    fake = tmp_path / "proc"
    (fake / "4242" / "fd").mkdir(parents=True)
    (fake / "4242" / "comm").write_text("qemu-system-x86\n")
    target = os.path.realpath(tmp_path / "shared.raw")
    (fake / "4242" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:1a 99   {target}\n")
    (fake / "self").mkdir()
    assert preflight.proc_users(tmp_path / "shared.raw", fake) == [(4242, "qemu-system-x86")]


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


def test_kvm_verdict_is_cached_per_machine(tmp_path: Path) -> None:
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
