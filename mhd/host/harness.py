"""The harness proper: check inputs, boot N guests on one shared device, run suites, judge, clean up.

Entry point: ``qemu/cxl-mhd.sh`` (``python -m mhd``).  Exit codes: 0 all passed, 1 a test failed,
skipped without a declared reason, or nothing ran, 2 usage error, 3 bad input (kernel, modules,
QEMU, memory, disk, busy shared file, a malformed expected-skips.toml), 4 a guest failed to boot or
bring its device up, 130 interrupted.  Every run ends with a per-phase timing table (mhd.timing).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mhd import identity, suiterun, warm
from mhd.agentclient import Result
from mhd.errors import BadInput, GuestFailure, HarnessError, Interrupted
from mhd.initramfs import build_initramfs
from mhd.kernel import KernelImage, find_module_tree, read_kernel
from mhd.preflight import (  # noqa: F401 - re-exported for bench_boot and tests
    cached_kvm_probe,
    check_resources,
    default_modules_for,
    find_qemu,
    kvm_cache_key,
    meminfo_available_mb,
    probe_kvm,
    proc_users,
)
from mhd.qemucmd import GuestSpec, check_shared_size, kvm_probe_verdict, net_links, parse_size  # noqa: F401
from mhd.suites import compile_project, host_collect, split_suite
from mhd.timing import Timing, boot_detail, boot_marks
from mhd.verdict import DeclarationError, Judged, load_declarations, run_verdict
from mhd.vm import Guest

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_KVER = "7.3.4+deb13-amd64"
MHD_DIR = Path(__file__).resolve().parent
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECOND_NVDIMM_SIZE = 512 << 20
"""nvdimm guests get a second device (DAXMODE_TEST_DEV2) for concurrent runs on two devices."""


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
    warm: bool = True
    plant: bool = True


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
    ap.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="start every guest Python command as a new interpreter (no warm forks; for comparison)",
    )
    ap.add_argument(
        "--no-plant",
        dest="plant",
        action="store_false",
        help="do not plant decoy host state (famfs UUID, machine-id, configs) for guests to ignore",
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
        warm=a.warm,
        plant=a.plant,
    )


def _read_host_file(path: str, limit: int = 256) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


class Run:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.guests: list[Guest] = []
        self.run_dir: Path | None = None
        self.shm_dir: Path | None = None
        self.shared_file: Path | None = None
        self.second_file: Path | None = None
        self.devices: dict[int, dict] = {}
        self.facts: dict[int, dict] = {}
        self.summary: list[str] = []
        self.parts: list[Judged] = []
        self.timing = Timing()
        self.started = time.monotonic()
        self.guest_paths: list[str] = []
        self.host_paths: list[str] = []
        self.decls: list = []
        self.idents = identity.identities(cfg.hosts)
        self.decoy = identity.identities(1)[0]
        self.planted: list[str] = []
        self.host_ids = {
            "MHD_HOST_SYSTEM_UUID": _read_host_file("/opt/famfs/system_uuid"),
            "MHD_HOST_MACHINE_ID": _read_host_file("/etc/machine-id"),
        }
        self.cmd_results: list[tuple[str, Result]] = []

    def use_suite(self, suite: str) -> None:
        """Check the suite and its skip declarations before anything boots (a typo must not cost one)."""
        self.guest_paths, self.host_paths = split_suite(suite, PROJECT)
        dirs = sorted({(PROJECT / p).parent if p.endswith(".py") else PROJECT / p for p in self.guest_paths})
        dirs += sorted({(PROJECT / p).parent for p in self.host_paths})
        try:
            self.decls = load_declarations(PROJECT, [d for d in dirs if d.is_dir()])
        except DeclarationError as e:
            raise BadInput(f"skip declarations: {e}") from None

    # -- setup
    def prepare(self) -> None:
        cfg = self.cfg
        with self.timing.phase("prepare") as ph:
            self.qemu, self.qver = find_qemu(cfg.qemu, cfg.backend)
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
            detail = [f"compile {compile_project(PROJECT):.1f}"]
            self.preload = warm.preload_names("daxmode", warm.imported_names(str(PROJECT / "daxmode")))
            if self.guest_paths:
                detail.append(f"collect {host_collect(self.python, PROJECT, self.guest_paths):.1f}")
            self.initrd = build_initramfs(self.module_tree, PROJECT / ".cache" / "initramfs")
            self.run_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-"))
            if cfg.plant:
                try:
                    self.planted, note = identity.plant_host_state(
                        self.run_dir, self.decoy, [PROJECT, self.results, self.run_dir, shm]
                    )
                except OSError as e:
                    self.planted, note = [], f"host state not planted: {e}"
                log(note)
            if cfg.shared_file is None:
                self.shm_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-", dir=shm))
                self.shared_file = self.shm_dir / f"{cfg.backend}-shared.raw"
            else:
                self.shared_file = cfg.shared_file.resolve()
            if cfg.backend == "nvdimm":
                if self.shm_dir is None:
                    self.shm_dir = Path(tempfile.mkdtemp(prefix="daxmode-mhd-", dir=shm))
                self.second_file = self.shm_dir / "nvdimm-shared2.raw"
            # A fresh, zeroed device for every run: truncate to 0 first drops old contents.
            for path, size in self.shared_files():
                with open(path, "wb") as f:
                    f.truncate(size)
            t0 = time.monotonic()
            if cfg.kvm == "off":
                self.accel, why = "tcg", "--kvm off"
            else:
                key = kvm_cache_key(self.qver, self.kernel.banner, _read_host_file("/proc/cpuinfo", 1 << 16))
                ok, why, cached = cached_kvm_probe(
                    PROJECT / ".cache" / "kvm-probe.json",
                    key,
                    lambda: probe_kvm(self.qemu, cfg.kernel, self.initrd, self.run_dir),
                )
                if cfg.kvm == "on" and not ok:
                    raise BadInput(f"--kvm on: KVM does not work here ({why})")
                self.accel = "kvm" if ok else "tcg"
                why = f"KVM probe{' (cached)' if cached else ''}: {why}"
            detail.append(f"KVM probe {time.monotonic() - t0:.1f}")
            ph.detail = ", ".join(detail)
        ncpu = os.cpu_count() or 1
        self.smp = cfg.smp or max(1, min(2, ncpu // cfg.hosts))
        log(f"QEMU {'.'.join(map(str, self.qver))} ({self.qemu})")
        log(f"kernel {self.kernel.version} ({cfg.kernel}), modules {self.module_tree}")
        log(
            f"backend {cfg.backend}, {cfg.hosts} host(s), shared {cfg.shared_size >> 20}M "
            f"at {self.shared_file}, guest RAM {cfg.mem_mb}M, smp {self.smp}"
        )
        log(f"accelerator {self.accel} ({why})")
        log(f"results in {self.results}")

    def shared_files(self) -> list[tuple[Path, int]]:
        files = [(self.shared_file, self.cfg.shared_size)] if self.shared_file is not None else []
        if self.second_file is not None:
            files.append((self.second_file, SECOND_NVDIMM_SIZE))
        return files

    def run_facts(self) -> dict:
        cfg = self.cfg
        return {
            "backend": cfg.backend,
            "hosts": cfg.hosts,
            "accel": getattr(self, "accel", "tcg"),
            "online_ok": cfg.backend == "nvdimm" and cfg.hosts == 1,
            "host_state_planted": bool(self.planted),
        }

    def guest_env(self, host: int) -> dict[str, str]:
        cfg = self.cfg
        env = {
            "DAXMODE_VM_BACKEND": cfg.backend,
            "DAXMODE_VM_HOST": str(host),
            "DAXMODE_VM_HOSTS": str(cfg.hosts),
            "DAXMODE_VM_SHARE": "/run/mhd/share",
            **self.idents[host].env(),
            **{k: v for k, v in self.host_ids.items() if v},
            "MHD_HOST_PLANTED": "1" if self.planted else "0",
        }
        if self.planted:
            env["MHD_DECOY_FILES"] = " ".join(self.planted)
            env["MHD_DECOY_SYSTEM_UUID"] = self.decoy.system_uuid
            env["MHD_DECOY_MACHINE_ID"] = self.decoy.machine_id
        # Onlining the shared memory as RAM is safe only on plain guest RAM (nvdimm) with no other
        # host using it; never for CXL under QEMU.
        if self.run_facts()["online_ok"]:
            env["DAXMODE_VM_ONLINE_OK"] = "1"
        return env

    def start_guests(self) -> None:
        cfg = self.cfg
        assert self.run_dir is not None and self.shared_file is not None
        links = net_links(cfg.hosts, self.run_dir) if cfg.network else {h: () for h in range(cfg.hosts)}
        self.boot_started = time.monotonic()
        for h in range(cfg.hosts):
            hdir = self.results / f"host{h}"
            share = hdir / "share"
            if hdir.exists():
                shutil.rmtree(hdir)
            share.mkdir(parents=True)
            ident = self.idents[h]
            envfile = {
                "MHD_HOST": str(h),
                "MHD_HOSTNAME": ident.hostname,
                "MHD_MACHINE_ID": ident.machine_id,
                "MHD_SYSTEM_UUID": ident.system_uuid,
                "MHD_MASK": identity.mask_env(),
                "MHD_PYTHON": str(self.python),
                "MHD_AGENT": str(MHD_DIR / "agent.py"),
                "MHD_STAGE2": str(MHD_DIR / "stage2.sh"),
                "MHD_PROJECT": str(PROJECT),
                "MHD_PATH": f"{PROJECT / '.venv' / 'bin'}:{GUEST_PATH}",
                "MHD_UDEV": "1" if cfg.udev else "0",
                "MHD_SHELL": "1" if cfg.keep else "0",
                "MHD_WARM": "1" if cfg.warm else "0",
                "MHD_PRELOAD": " ".join(self.preload),
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
                second_file=self.second_file,
                second_size=SECOND_NVDIMM_SIZE if self.second_file else 0,
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
        details = []
        for g in self.guests:
            t = g.wait_ready(self.cfg.boot_timeout)
            marks = boot_marks(_read(self.results / g.name / "share" / "boot.times"))
            log(f"{g.name}: ready after {t:.1f}s ({g.release}; {boot_detail(marks)})")
            details.append(f"{g.name} {t:.1f} ({boot_detail(marks)})")
            g.client.setenv(self.guest_env(g.spec.host))
        self.timing.add("boot", time.monotonic() - self.boot_started, "; ".join(details))

    def bring_up(self) -> None:
        """Bring every guest's device to devdax.

        CXL decoder state is per guest, so all guests work at once.  The nvdimm namespace is written by
        host 0; the others must probe after that (qemu-cxl.md section 1c), so they follow it.
        """
        with self.timing.phase("bring-up") as ph:
            first = self.guests[:1] if self.cfg.backend == "nvdimm" else []
            rest = [g for g in self.guests if g not in first]
            times = {g.name: self._bring_up_one(g) for g in first}
            with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
                for g, fut in [(g, pool.submit(self._bring_up_one, g)) for g in rest]:
                    times[g.name] = fut.result()
            ph.detail = ", ".join(f"{n} {t:.1f}" for n, t in times.items()) + (
                " (in parallel)" if len(rest) > 1 else ""
            )

    def _bring_up_one(self, g: Guest) -> float:
        h = g.spec.host
        args = [str(self.python), str(MHD_DIR / "bringup.py"), "--backend", self.cfg.backend]
        args += ["--devices", str(len(self.shared_files()))]
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
        g.client.setenv(self.device_env(h))
        dt = time.monotonic() - t0
        more = f" (and {', '.join(info['devices'][1:])})" if len(info.get("devices", [])) > 1 else ""
        log(
            f"{g.name}: {info['device']} ({info['size'] >> 20} MiB, align {info['align'] >> 10} KiB){more} "
            f"bound to {info['driver']} in {dt:.1f}s"
        )
        return dt

    def gather_facts(self) -> None:
        """What each guest's kernel and tools can do (for judging skips), and the private network."""
        with self.timing.phase("facts, network") as ph:
            with ThreadPoolExecutor(max_workers=len(self.guests)) as pool:
                list(pool.map(self._facts_and_network, self.guests))
            (self.results / "facts.json").write_text(json.dumps(self.facts, indent=1))
            f0 = self.facts[0]
            ph.detail = (
                f"kernel {f0['kernel']}, fuse_famfs {f0['fuse_famfs']}, udev {f0['udev']}, "
                f"host state planted {f0['host_state_planted']} (in parallel)"
            )

    def _facts_and_network(self, g: Guest) -> None:
        r = g.run([str(self.python), str(MHD_DIR / "facts.py")], timeout=120)
        got = _last_json(r.stdout)
        if not r.ok or got is None:
            raise GuestFailure(f"{g.name}: cannot read the guest's facts: {r.describe()}")
        self.facts[g.spec.host] = {**got, **self.run_facts()}
        if not self.cfg.network or self.cfg.hosts < 2:
            return
        assert self.run_dir is not None
        h = g.spec.host
        links = net_links(self.cfg.hosts, self.run_dir)[h]
        r = g.run(
            [str(self.python), str(MHD_DIR / "guestnet.py"), str(h), *[str(ln.link) for ln in links]], 60
        )
        if not r.ok:
            raise GuestFailure(f"{g.name}: private network setup failed: {r.describe()}")

    def device_env(self, host: int) -> dict[str, str]:
        info = self.devices[host]
        env = {"DAXMODE_TEST_DEV": info["device"]}
        if len(info.get("devices", [])) > 1:
            env["DAXMODE_TEST_DEV2"] = info["devices"][1]
        return env

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
                    "env": {**self.guest_env(g.spec.host), **self.device_env(g.spec.host)},
                }
                for g in self.guests
            ],
        }
        path = self.run_dir / "session.json"
        path.write_text(json.dumps(data, indent=1))
        (self.results / "session.json").write_text(json.dumps(data, indent=1))
        return path

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
        """Power every guest off at once (or kill them), then remove the run's files."""
        t0 = time.monotonic()

        def one(g: Guest) -> None:
            try:
                if graceful:
                    g.stop()
                else:
                    g.kill()
            except Exception as e:  # keep cleaning the others
                print(f"mhd: cleanup of {g.name}: {e}", file=sys.stderr)

        if self.guests:
            with ThreadPoolExecutor(max_workers=len(self.guests)) as pool:
                list(pool.map(one, self.guests))
        if self.shm_dir is not None:
            shutil.rmtree(self.shm_dir, ignore_errors=True)
        if self.run_dir is not None:
            if self.planted:
                identity.detach(self.run_dir / "plant")
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.timing.add("teardown", time.monotonic() - t0, "parallel poweroff" if graceful else "killed")

    def report(self) -> int:
        """Summary lines, the timing table and the verdict; returns the exit code."""
        for line in self.summary:
            print(line)
        if self.cfg.cmd is not None:
            failed = sum(not r.ok for _, r in self.cmd_results)
            print(self.timing.table())
            print(f"{len(self.cmd_results) - failed} passed, {failed} failed")
            return 1 if failed else 0
        ok, why = run_verdict(self.parts)
        print(self.timing.table())
        (self.results / "timing.json").write_text(self.timing.to_json())
        passed = sum(p.passed for p in self.parts)
        failed = sum(len(p.failed) for p in self.parts)
        skipped = sum(p.skipped for p in self.parts)
        unexpected = sum(len(p.unexpected) for p in self.parts)
        line = f"{passed} passed, {failed} failed"
        if skipped:
            line += f", {skipped} skipped ({skipped - unexpected} expected, {unexpected} unexpected)"
        print(line)
        if not ok:
            print("verdict: FAIL")
            for w in why:
                print(f"  {w}")
            return 1
        print("verdict: PASS")
        return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


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
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell: Ctrl-C was never ours, but a SIGINT still means stop.
        signal.signal(signal.SIGINT, _raise_interrupt)
    run: Run | None = None
    graceful = True
    try:
        cfg = parse_args(argv)
        run = Run(cfg)
        if cfg.suite is not None:
            run.use_suite(cfg.suite)
        run.prepare()
        run.start_guests()
        run.wait_ready()
        run.bring_up()
        run.gather_facts()
        if cfg.cmd is not None:
            suiterun.run_cmd(run, cfg.cmd)
        if cfg.suite is not None:
            if run.guest_paths:
                suiterun.run_guest_suites(run)
            if run.host_paths:
                suiterun.run_host_suite(run)
            suiterun.warm_stats(run)
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
            if run.timing.phases:
                print(run.timing.table(), file=sys.stderr)
        return e.exit_code
    finally:
        if run is not None and graceful:
            run.cleanup(graceful=True)
    if cfg.cmd is None and cfg.suite is None:
        return 0
    return run.report()


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
