"""The harness proper: check inputs, boot N guests on one shared device, run suites, report, clean up.

Entry point: ``qemu/cxl-mhd.sh`` (``python -m mhd``).  Exit codes: 0 all passed, 1 a test failed,
2 usage error, 3 bad input (kernel, modules, QEMU, memory, disk, busy shared file), 4 a guest
failed to boot or bring its device up, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mhd.agentclient import Result
from mhd.errors import BadInput, GuestFailure, HarnessError, Interrupted
from mhd.initramfs import build_initramfs
from mhd.kernel import KernelImage, find_module_tree, read_kernel
from mhd.qemucmd import (
    QEMU_MIN_CXL,
    QEMU_MIN_NVDIMM,
    GuestSpec,
    check_shared_size,
    kvm_probe_verdict,
    net_links,
    parse_qemu_version,
    parse_size,
)
from mhd.vm import Guest

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_KVER = "7.3.4+deb13-amd64"
MHD_DIR = Path(__file__).resolve().parent
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_OVERHEAD_MB = 200
"""Per-guest host memory beyond guest RAM (QEMU itself, TCG translation cache) used in the memory check."""


def default_kernel(project: Path = PROJECT) -> Path:
    return (
        project / ".cache" / "kernels" / DEFAULT_KVER / "usr" / "lib" / "modules" / DEFAULT_KVER / "vmlinuz"
    )


def log(msg: str) -> None:
    print(f"mhd: {msg}", flush=True)


@dataclass
class Config:
    backend: str = "cxl"
    hosts: int = 2
    kernel: Path = field(default_factory=default_kernel)
    modules: Path | None = None
    shared_size: int = 0
    shared_file: Path | None = None
    mem_mb: int = 1024
    smp: int = 0
    kvm: str = "auto"
    suite: str | None = None
    cmd: str | None = None
    results: Path = field(default_factory=lambda: PROJECT / "results" / "mhd")
    timeout: float = 900.0
    boot_timeout: float = 300.0
    qemu: str = "qemu-system-x86_64"
    keep: bool = False
    udev: bool = True
    network: bool = True
    hide_hypervisor: bool = True


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cxl-mhd.sh",
        description="Boot N QEMU guests sharing one CXL (or nvdimm) memory device and run tests in them.",
    )
    ap.add_argument("--backend", choices=["cxl", "nvdimm"], default="cxl")
    ap.add_argument("--hosts", type=int, default=2, help="number of guests (1..8, default 2)")
    ap.add_argument(
        "--kernel", type=Path, default=None, help="bzImage (default: Debian 7.3.4 from make setup)"
    )
    ap.add_argument(
        "--modules", type=Path, default=None, help="module tree (lib/modules/VER or an install root)"
    )
    ap.add_argument("--shared-size", default=None, help="shared device size (cxl: 512M, nvdimm: 1G)")
    ap.add_argument(
        "--shared-file", type=Path, default=None, help="backing file (default: a new one in /dev/shm)"
    )
    ap.add_argument("--mem", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--smp", type=int, default=0, help="vCPUs per guest (default: host cores / hosts, 1..2)")
    ap.add_argument("--kvm", choices=["auto", "on", "off"], default="auto")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--suite", default=None, help="tests/vm: guest suites + host-side scenarios")
    what.add_argument("--cmd", default=None, help="a shell command to run in each guest")
    ap.add_argument("--results", type=Path, default=None, help="results directory (default results/mhd)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per host (default 900)")
    ap.add_argument("--boot-timeout", type=float, default=300.0, help="seconds to boot (default 300)")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"))
    ap.add_argument("--keep", action="store_true", help="keep the guests running until Ctrl-C")
    ap.add_argument("--no-udev", dest="udev", action="store_false", help="do not start udevd in guests")
    ap.add_argument("--no-network", dest="network", action="store_false", help="no private network")
    ap.add_argument(
        "--show-hypervisor",
        dest="hide_hypervisor",
        action="store_false",
        help="cxl: keep the CPUID hypervisor bit (kernels with CONFIG_CXL_REGION_INVALIDATION_TEST)",
    )
    return ap


def parse_args(argv: list[str]) -> Config:
    """Parse and validate; usage problems exit 2 through argparse, value problems raise BadInput."""
    ap = build_parser()
    a = ap.parse_args(argv)
    if not 1 <= a.hosts <= 8:
        raise BadInput(f"--hosts {a.hosts}: choose 1..8")
    try:
        mem = parse_size(a.mem)
        size = parse_size(a.shared_size) if a.shared_size else (512 << 20 if a.backend == "cxl" else 1 << 30)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if mem < 256 << 20:
        raise BadInput(f"--mem {a.mem}: guests need at least 256M")
    try:
        check_shared_size(a.backend, size)
    except ValueError as e:
        raise BadInput(f"--shared-size: {e}") from None
    if a.smp < 0 or a.smp > 8:
        raise BadInput(f"--smp {a.smp}: choose 1..8")
    if a.timeout <= 0 or a.boot_timeout <= 0:
        raise BadInput("timeouts must be positive")
    return Config(
        backend=a.backend,
        hosts=a.hosts,
        kernel=a.kernel or default_kernel(),
        modules=a.modules,
        shared_size=size,
        shared_file=a.shared_file,
        mem_mb=mem >> 20,
        smp=a.smp,
        kvm=a.kvm,
        suite=a.suite,
        cmd=a.cmd,
        results=a.results or PROJECT / "results" / "mhd",
        timeout=a.timeout,
        boot_timeout=a.boot_timeout,
        qemu=a.qemu,
        keep=a.keep,
        udev=a.udev,
        network=a.network,
        hide_hypervisor=a.hide_hypervisor,
    )


# ---- preflight -------------------------------------------------------------------------------


def find_qemu(name: str, backend: str) -> tuple[str, tuple[int, int, int]]:
    exe = shutil.which(name)
    if not exe:
        raise BadInput(f"QEMU {name} not found (run `make setup`: it installs QEMU >= 8.1)")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        ver = parse_qemu_version(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise BadInput(f"QEMU {exe}: cannot read its version ({e})") from None
    need = QEMU_MIN_CXL if backend == "cxl" else QEMU_MIN_NVDIMM
    if ver[:2] < need:
        raise BadInput(
            f"QEMU {exe} is {'.'.join(map(str, ver))}; the {backend} backend needs "
            f">= {'.'.join(map(str, need))} (run `make setup`)"
        )
    return exe, ver


def default_modules_for(kernel: Path, version: str) -> Path:
    """Module tree next to the kernel: Debian keeps vmlinuz inside lib/modules/VER."""
    if kernel.parent.name == version:
        return kernel.parent
    raise BadInput(f"kernel {kernel}: pass --modules with its module tree (lib/modules/{version})")


def proc_users(path: Path, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """Processes that have ``path`` open or mapped (a QEMU maps its backing file), without lsof."""
    target = os.path.realpath(path)
    users = []
    for d in proc.iterdir() if proc.is_dir() else []:
        if not d.name.isdigit():
            continue
        hit = False
        try:
            for fd in (d / "fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        hit = True
                        break
                except OSError:
                    continue
        except OSError:
            pass
        if not hit:
            try:
                with open(d / "maps", errors="replace") as f:
                    hit = any(line.rstrip("\n").endswith(" " + target) for line in f)
            except OSError:
                pass
        if hit:
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                comm = "?"
            users.append((int(d.name), comm))
    return users


def meminfo_available_mb(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise ValueError("no MemAvailable in /proc/meminfo")


def check_resources(cfg: Config, shm_dir: Path, results: Path) -> None:
    need_mb = cfg.hosts * (cfg.mem_mb + QEMU_OVERHEAD_MB) + (cfg.shared_size >> 20)
    try:
        avail = meminfo_available_mb(Path("/proc/meminfo").read_text())
    except (OSError, ValueError):
        avail = None
    if avail is not None and need_mb > avail:
        raise BadInput(
            f"not enough memory: {cfg.hosts} guests x {cfg.mem_mb}M + shared {cfg.shared_size >> 20}M "
            f"needs ~{need_mb}M, {avail}M available (use --mem/--hosts/--shared-size)"
        )
    st = os.statvfs(shm_dir)
    if cfg.shared_file is None and st.f_bavail * st.f_frsize < cfg.shared_size:
        raise BadInput(f"not enough space in {shm_dir} for the {cfg.shared_size >> 20}M shared file")
    results.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(results)
    if st.f_bavail * st.f_frsize < 64 << 20:
        raise BadInput(f"not enough disk space in {results} (need 64M for logs)")


# ---- KVM -------------------------------------------------------------------------------------


def probe_kvm(
    qemu: str, kernel: Path, initrd: Path, workdir: Path, timeout: float = 20.0
) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not accessible"
    console = workdir / "kvm-probe.log"
    argv = [
        qemu, "-accel", "kvm", "-cpu", "host", "-m", "512M",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(kernel), "-initrd", str(initrd), "-no-reboot",
        "-append", "console=ttyS0 panic=-1 rdinit=/init mhd_probe=1",
        "-serial", f"file:{console}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    text = out.decode(errors="replace")
    with contextlib.suppress(OSError):
        text += console.read_text(errors="replace")
    return kvm_probe_verdict(proc.returncode, text, timed_out)


# ---- results ---------------------------------------------------------------------------------


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        return self

    def line(self) -> str:
        s = f"{self.passed} passed, {self.failed} failed"
        return s + (f", {self.skipped} skipped" if self.skipped else "")


def junit_counts(xml_text: str) -> Counts:
    """Counts from pytest's junit XML (errors count as failures)."""
    root = ET.fromstring(xml_text)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = Counts()
    for s in suites:
        total = int(s.get("tests", 0))
        failed = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped = int(s.get("skipped", 0))
        c += Counts(total - failed - skipped, failed, skipped)
    return c


def split_suite(suite: str, project: Path = PROJECT) -> tuple[list[str], list[str]]:
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


# ---- the run ---------------------------------------------------------------------------------


class Run:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.guests: list[Guest] = []
        self.run_dir: Path | None = None
        self.shm_dir: Path | None = None
        self.shared_file: Path | None = None
        self.devices: dict[int, dict] = {}
        self.summary: list[str] = []
        self.counts = Counts()
        self.started = time.monotonic()

    # -- setup
    def prepare(self) -> None:
        cfg = self.cfg
        self.qemu, qver = find_qemu(cfg.qemu, cfg.backend)
        self.kernel: KernelImage = read_kernel(cfg.kernel)
        modules = cfg.modules or default_modules_for(cfg.kernel, self.kernel.version)
        self.module_tree = find_module_tree(modules, self.kernel.version)
        py = PROJECT / ".venv" / "bin" / "python"
        if not py.exists():
            raise BadInput(f"no venv at {PROJECT / '.venv'} (run `make venv`)")
        self.python = py
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        self.results = cfg.results.resolve()
        check_resources(cfg, shm, self.results)
        if cfg.shared_file is not None:
            users = proc_users(cfg.shared_file) if cfg.shared_file.exists() else []
            if users:
                who = ", ".join(f"{pid} ({comm})" for pid, comm in users)
                raise BadInput(f"shared file {cfg.shared_file} is in use by process {who}")
        self.initrd = build_initramfs(self.module_tree, PROJECT / ".cache" / "initramfs")
        self.run_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-"))
        if cfg.shared_file is None:
            self.shm_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-", dir=shm))
            self.shared_file = self.shm_dir / f"{cfg.backend}-shared.raw"
        else:
            self.shared_file = cfg.shared_file.resolve()
        # A fresh, zeroed device for every run: truncate to 0 first drops old contents.
        with open(self.shared_file, "wb") as f:
            f.truncate(cfg.shared_size)
        if cfg.kvm == "off":
            self.accel, why = "tcg", "--kvm off"
        else:
            ok, why = probe_kvm(self.qemu, cfg.kernel, self.initrd, self.run_dir)
            if cfg.kvm == "on" and not ok:
                raise BadInput(f"--kvm on: KVM does not work here ({why})")
            self.accel = "kvm" if ok else "tcg"
            why = f"KVM probe: {why}"
        ncpu = os.cpu_count() or 1
        self.smp = cfg.smp or max(1, min(2, ncpu // cfg.hosts))
        log(f"QEMU {'.'.join(map(str, qver))} ({self.qemu})")
        log(f"kernel {self.kernel.version} ({cfg.kernel}), modules {self.module_tree}")
        log(
            f"backend {cfg.backend}, {cfg.hosts} host(s), shared {cfg.shared_size >> 20}M "
            f"at {self.shared_file}, guest RAM {cfg.mem_mb}M, smp {self.smp}"
        )
        log(f"accelerator {self.accel} ({why})")
        log(f"results in {self.results}")

    def guest_env(self, host: int) -> dict[str, str]:
        cfg = self.cfg
        env = {
            "DAXMODE_VM_BACKEND": cfg.backend,
            "DAXMODE_VM_HOST": str(host),
            "DAXMODE_VM_HOSTS": str(cfg.hosts),
            "DAXMODE_VM_SHARE": "/run/mhd/share",
        }
        # Onlining the shared memory as RAM is safe only on plain guest RAM (nvdimm) with no other
        # host using it; never for CXL under QEMU.
        if cfg.backend == "nvdimm" and cfg.hosts == 1:
            env["DAXMODE_VM_ONLINE_OK"] = "1"
        return env

    def start_guests(self) -> None:
        cfg = self.cfg
        assert self.run_dir is not None and self.shared_file is not None
        links = net_links(cfg.hosts, self.run_dir) if cfg.network else {h: () for h in range(cfg.hosts)}
        for h in range(cfg.hosts):
            hdir = self.results / f"host{h}"
            share = hdir / "share"
            if hdir.exists():
                shutil.rmtree(hdir)
            share.mkdir(parents=True)
            envfile = {
                "MHD_HOST": str(h),
                "MHD_HOSTNAME": f"daxmode-host{h}",
                "MHD_PYTHON": str(self.python),
                "MHD_AGENT": str(MHD_DIR / "agent.py"),
                "MHD_STAGE2": str(MHD_DIR / "stage2.sh"),
                "MHD_PROJECT": str(PROJECT),
                "MHD_PATH": f"{PROJECT / '.venv' / 'bin'}:{GUEST_PATH}",
                "MHD_UDEV": "1" if cfg.udev else "0",
                "MHD_SHELL": "1" if cfg.keep else "0",
            }
            (share / "guest.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in envfile.items()))
            spec = GuestSpec(
                qemu=self.qemu,
                kernel=cfg.kernel.resolve(),
                initrd=self.initrd,
                module_tree=self.module_tree.resolve(),
                share_dir=share,
                run_dir=self.run_dir,
                console_log=hdir / "console.log",
                backend=cfg.backend,
                host=h,
                mem_mb=cfg.mem_mb,
                smp=self.smp,
                accel=self.accel,
                shared_file=self.shared_file,
                shared_size=cfg.shared_size,
                net=links[h],
                hide_hypervisor=cfg.hide_hypervisor,
            )
            g = Guest(spec, hdir / "qemu.log")
            self.guests.append(g)
            g.start()
            if h == 0:
                # Host 0 listens on every link; the others connect, so its sockets must exist first.
                deadline = time.monotonic() + 30
                while not all(ln.socket.exists() for ln in links[0]):
                    if not g.alive():
                        raise GuestFailure(f"host0: QEMU exited at start: {g.qemu_error()}")
                    if time.monotonic() > deadline:
                        raise GuestFailure("host0: QEMU did not open its network sockets")
                    time.sleep(0.05)

    def wait_ready(self) -> None:
        for g in self.guests:
            t = g.wait_ready(self.cfg.boot_timeout)
            log(f"{g.name}: ready after {t:.1f}s ({g.release})")
            g.client.setenv(self.guest_env(g.spec.host))

    def bring_up(self) -> None:
        """Bring every guest's device to devdax.

        CXL decoder state is per guest, so all guests work at once.  The nvdimm namespace is written by
        host 0; the others must probe after that (qemu-cxl.md section 1c), so they follow it.
        """
        first = self.guests[:1] if self.cfg.backend == "nvdimm" else []
        rest = [g for g in self.guests if g not in first]
        for g in first:
            self._bring_up_one(g)
        with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
            for fut in [pool.submit(self._bring_up_one, g) for g in rest]:
                fut.result()

    def _bring_up_one(self, g: Guest) -> None:
        h = g.spec.host
        args = [str(self.python), str(MHD_DIR / "bringup.py"), "--backend", self.cfg.backend]
        if self.cfg.backend == "nvdimm" and h == 0:
            args.append("--create")
        t0 = time.monotonic()
        r = g.run(args, timeout=300)
        (self.results / g.name / "bringup.log").write_text(r.stderr + r.stdout)
        info = _last_json(r.stdout)
        if not r.ok or info is None or "device" not in info:
            why = (info or {}).get("error") or r.describe()
            raise GuestFailure(f"{g.name}: device bring-up failed: {why}")
        self.devices[h] = info
        g.client.setenv({"DAXMODE_TEST_DEV": info["device"]})
        log(
            f"{g.name}: {info['device']} ({info['size'] >> 20} MiB, align {info['align'] >> 10} KiB) "
            f"bound to {info['driver']} in {time.monotonic() - t0:.1f}s"
        )

    def network(self) -> None:
        if not self.cfg.network or self.cfg.hosts < 2:
            return
        assert self.run_dir is not None
        links = net_links(self.cfg.hosts, self.run_dir)
        for g in self.guests:
            h = g.spec.host
            r = g.run(
                [str(self.python), str(MHD_DIR / "guestnet.py"), str(h), *[str(ln.link) for ln in links[h]]],
                60,
            )
            if not r.ok:
                raise GuestFailure(f"{g.name}: private network setup failed: {r.describe()}")

    def write_session(self) -> Path:
        assert self.run_dir is not None
        data = {
            "backend": self.cfg.backend,
            "kernel": self.kernel.version,
            "hosts": [
                {
                    "index": g.spec.host,
                    "agent": str(g.agent_socket),
                    "console": str(g.spec.console_log),
                    "env": {
                        **self.guest_env(g.spec.host),
                        "DAXMODE_TEST_DEV": self.devices[g.spec.host]["device"],
                    },
                }
                for g in self.guests
            ],
        }
        path = self.run_dir / "session.json"
        path.write_text(json.dumps(data, indent=1))
        (self.results / "session.json").write_text(json.dumps(data, indent=1))
        return path

    # -- running things
    def run_cmd(self, cmd: str) -> None:
        for g in self.guests:
            r = g.run(cmd, timeout=self.cfg.timeout)
            sys.stdout.write(f"--- {g.name}: rc={r.rc}{' (timed out)' if r.timed_out else ''}\n")
            sys.stdout.write(r.stdout)
            if r.stderr:
                sys.stdout.write(r.stderr)
            self.summary.append(
                f"{g.name}: command {'ok' if r.ok else 'FAILED'} (rc {r.rc}, {r.seconds:.1f}s)"
            )
            if r.ok:
                self.counts.passed += 1
            else:
                self.counts.failed += 1

    def run_guest_suite(self, paths: list[str]) -> None:
        for g in self.guests:
            xml_guest = "/run/mhd/share/guest-junit.xml"
            xml_host = self.results / g.name / "share" / "guest-junit.xml"
            argv = [
                str(self.python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs",
                f"--junitxml={xml_guest}", "--rootdir", str(PROJECT), *paths,
            ]  # fmt: skip
            log(f"{g.name}: running {' '.join(paths)} in the guest")
            t0 = time.monotonic()
            r = g.run(argv, timeout=self.cfg.timeout, cwd=str(PROJECT))
            dt = time.monotonic() - t0
            (self.results / g.name / "guest-pytest.log").write_text(r.stdout + r.stderr)
            if r.timed_out:
                self.counts.failed += 1
                self.summary.append(f"{g.name}: guest suite TIMED OUT after {dt:.0f}s")
                continue
            if r.rc == 5:  # pytest: no tests collected
                self.summary.append(f"{g.name}: no guest tests collected in {' '.join(paths)}")
                continue
            try:
                c = junit_counts(xml_host.read_text())
            except (OSError, ET.ParseError):
                c = Counts(0, 1, 0)
                sys.stdout.write(r.stdout[-3000:] + r.stderr[-2000:])
            if r.rc not in (0, 1) and c.failed == 0:
                c.failed += 1  # pytest itself failed (internal/usage error)
            self.counts += c
            dev = self.devices.get(g.spec.host, {}).get("device", "?")
            self.summary.append(f"{g.name} ({self.cfg.backend}, {dev}): {c.line()} in {dt:.1f}s")
            if c.failed:
                tail = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
                for ln in tail[:20]:
                    self.summary.append(f"  {g.name} {ln}")

    def run_host_suite(self, paths: list[str]) -> None:
        session = self.write_session()
        for g in self.guests:
            g.client.close()  # the agent socket takes one client: let pytest's fixture connect
        xml = self.results / "host-junit.xml"
        env = dict(os.environ, DAXMODE_VM_SESSION=str(session), PYTHONDONTWRITEBYTECODE="1")
        argv = [str(self.python), "-m", "pytest", "-q", "-rfEs", f"--junitxml={xml}", *paths]
        log(f"host-side scenarios: {' '.join(paths)}")
        t0 = time.monotonic()
        with open(self.results / "host-pytest.log", "w") as out:
            p = subprocess.run(
                argv, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=self.cfg.timeout
            )
        dt = time.monotonic() - t0
        text = (self.results / "host-pytest.log").read_text()
        if p.returncode == 5:
            self.summary.append("host-side: no tests collected")
            return
        try:
            c = junit_counts(xml.read_text())
        except (OSError, ET.ParseError):
            c = Counts(0, 1, 0)
        if p.returncode not in (0, 1) and c.failed == 0:
            c.failed += 1
        self.counts += c
        self.summary.append(f"host-side scenarios ({self.cfg.hosts} hosts): {c.line()} in {dt:.1f}s")
        if c.failed:
            for ln in text.splitlines():
                if ln.startswith(("FAILED", "ERROR")):
                    self.summary.append(f"  host-side {ln}")

    def keep_running(self) -> None:
        session = self.write_session()
        for g in self.guests:
            g.client.close()
        assert self.run_dir is not None
        log("guests are up; Ctrl-C powers them off. To attach:")
        for g in self.guests:
            sock = self.run_dir / f"{g.name}.console"
            log(f"  {g.name} root shell: socat -,rawer UNIX-CONNECT:{sock} (press Enter)")
        log(f"  run a command: qemu/cxl-mhd.sh exec --session {session} --host 0 -- daxmode list")
        log(f"  host-side tests: DAXMODE_VM_SESSION={session} .venv/bin/pytest tests/vm/test_crosshost.py")
        while all(g.alive() for g in self.guests):
            time.sleep(1)
        log("a guest exited")

    def cleanup(self, graceful: bool) -> None:
        for g in self.guests:
            try:
                if graceful:
                    g.stop()
                else:
                    g.kill()
            except Exception as e:  # keep cleaning the others
                print(f"mhd: cleanup of {g.name}: {e}", file=sys.stderr)
        if self.shm_dir is not None:
            shutil.rmtree(self.shm_dir, ignore_errors=True)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return v
    return None


def _raise_interrupt(signum, frame):
    raise Interrupted(f"interrupted by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "exec":
        return exec_main(argv[1:])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    run: Run | None = None
    graceful = True
    try:
        cfg = parse_args(argv)
        # Check the suite before booting anything: a typo must not cost a boot.
        guest_paths, host_paths = split_suite(cfg.suite) if cfg.suite is not None else ([], [])
        run = Run(cfg)
        run.prepare()
        run.start_guests()
        run.wait_ready()
        run.bring_up()
        run.network()
        if cfg.cmd is not None:
            run.run_cmd(cfg.cmd)
        if cfg.suite is not None:
            if guest_paths:
                run.run_guest_suite(guest_paths)
            if host_paths:
                run.run_host_suite(host_paths)
        if cfg.keep:
            run.keep_running()
    except KeyboardInterrupt:
        graceful = False
        print("mhd: interrupted; stopping guests", file=sys.stderr)
        if run is not None:
            run.cleanup(graceful=False)
        return Interrupted.exit_code
    except HarnessError as e:
        graceful = False
        print(f"mhd: error: {e}", file=sys.stderr)
        if run is not None:
            run.cleanup(graceful=False)
        return e.exit_code
    finally:
        if run is not None and graceful:
            run.cleanup(graceful=True)
    assert run is not None
    if not (cfg.cmd is None and cfg.suite is None):
        for line in run.summary:
            print(line)
        print(f"wall time {time.monotonic() - run.started:.1f}s")
        print(run.counts.line())
    return 1 if run.counts.failed else 0


def exec_main(argv: list[str]) -> int:
    """``cxl-mhd.sh exec --session FILE --host N -- CMD...``: run one command in a kept guest."""
    from mhd.agentclient import load_session

    ap = argparse.ArgumentParser(prog="cxl-mhd.sh exec")
    ap.add_argument("--session", type=Path, required=True)
    ap.add_argument("--host", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    hosts = load_session(a.session)
    if not 0 <= a.host < len(hosts):
        print(f"mhd: error: --host {a.host}: session has {len(hosts)} hosts", file=sys.stderr)
        return BadInput.exit_code
    r: Result = hosts[a.host].run(cmd if len(cmd) > 1 else cmd[0], timeout=a.timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.rc
