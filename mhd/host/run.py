"""The booted part of a run: N guests on one shared device, brought up, with their facts.

``Run`` is built whole from the prepare phase's products (mhd.host.prepare); each phase method
fills the per-guest tables it owns (``guests``, ``devices``, ``facts``), and the suite phases
(mhd.host.suiterun) record what they find in ``outcome``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mhd.constants import AGENT_MODULE, GUEST_DIR, GUEST_PATH, GUEST_SHARE, PROJECT
from mhd.host import identity
from mhd.host.config import Config
from mhd.host.errors import GuestFailure
from mhd.host.prepare import SECOND_NVDIMM_SIZE, Stack, Suite, Workspace, log, prepare, read_host_file
from mhd.host.qemucmd import GuestSpec, net_links
from mhd.host.report import Outcome
from mhd.host.timing import Timing, boot_detail, boot_marks
from mhd.host.vm import Guest


class Run:
    """The guests of one run; every attribute is made here, the phases only fill them in."""

    def __init__(self, cfg: Config, suite: Suite, stack: Stack, ws: Workspace, timing: Timing) -> None:
        self.cfg = cfg
        self.suite = suite
        self.stack = stack
        self.ws = ws
        self.timing = timing
        self.idents = identity.identities(cfg.hosts)
        self.host_ids = {
            "MHD_HOST_SYSTEM_UUID": read_host_file("/opt/famfs/system_uuid"),
            "MHD_HOST_MACHINE_ID": read_host_file("/etc/machine-id"),
        }
        self.guests: list[Guest] = []
        self.devices: dict[int, dict] = {}
        self.facts: dict[int, dict] = {}
        self.outcome = Outcome()
        self.boot_started = 0.0

    def run_facts(self) -> dict:
        cfg = self.cfg
        return {
            "backend": cfg.backend,
            "hosts": cfg.hosts,
            "accel": self.stack.accel,
            "online_ok": cfg.backend == "nvdimm" and cfg.hosts == 1,
            "host_state_planted": bool(self.ws.planted),
        }

    def guest_env(self, host: int) -> dict[str, str]:
        cfg = self.cfg
        env = {
            "DAXMODE_VM_BACKEND": cfg.backend,
            "DAXMODE_VM_HOST": str(host),
            "DAXMODE_VM_HOSTS": str(cfg.hosts),
            "DAXMODE_VM_SHARE": GUEST_SHARE,
            **self.idents[host].env(),
            **{k: v for k, v in self.host_ids.items() if v},
            "MHD_HOST_PLANTED": "1" if self.ws.planted else "0",
        }
        if self.ws.planted:
            env["MHD_DECOY_FILES"] = " ".join(self.ws.planted)
            env["MHD_DECOY_SYSTEM_UUID"] = self.ws.decoy.system_uuid
            env["MHD_DECOY_MACHINE_ID"] = self.ws.decoy.machine_id
        # Onlining the shared memory as RAM is safe only on plain guest RAM (nvdimm) with no other
        # host using it; never for CXL under QEMU.
        if self.run_facts()["online_ok"]:
            env["DAXMODE_VM_ONLINE_OK"] = "1"
        return env

    def start_guests(self) -> None:
        cfg = self.cfg
        st, ws = self.stack, self.ws
        links = net_links(cfg.hosts, ws.run_dir) if cfg.network else {h: () for h in range(cfg.hosts)}
        self.boot_started = time.monotonic()
        for h in range(cfg.hosts):
            hdir = st.results / f"host{h}"
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
                "MHD_PYTHON": str(st.python),
                "MHD_AGENT": AGENT_MODULE,
                "MHD_STAGE2": os.path.join(GUEST_DIR, "stage2.sh"),
                "MHD_PROJECT": PROJECT,
                "MHD_PATH": f"{st.python.parent}:{GUEST_PATH}",
                "MHD_UDEV": "1" if cfg.udev else "0",
                "MHD_SHELL": "1" if cfg.keep else "0",
                "MHD_WARM": "1" if cfg.warm else "0",
                "MHD_PRELOAD": " ".join(st.preload),
            }
            (share / "guest.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in envfile.items()))
            spec = GuestSpec(
                qemu=st.qemu,
                kernel=st.kernel_path.resolve(),
                initrd=st.initrd,
                module_tree=st.module_tree.resolve(),
                share_dir=share,
                run_dir=ws.run_dir,
                console_log=hdir / "console.log",
                backend=cfg.backend,
                host=h,
                mem_mb=cfg.mem_mb,
                smp=st.smp,
                accel=st.accel,
                shared_file=ws.shared_file,
                shared_size=cfg.shared_size,
                label_size=cfg.label_size,
                second_file=ws.second_file,
                second_size=SECOND_NVDIMM_SIZE if ws.second_file else 0,
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
            marks = boot_marks(_read(self.stack.results / g.name / "share" / "boot.times"))
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
        args = [str(self.stack.python), "-m", "mhd.guest.bringup", "--backend", self.cfg.backend]
        args += ["--devices", str(len(self.ws.shared_files()))]
        if self.cfg.backend == "nvdimm" and h == 0:
            args.append("--create")
        t0 = time.monotonic()
        r = g.run(args, timeout=300)
        (self.stack.results / g.name / "bringup.log").write_text(r.stderr + r.stdout)
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
            (self.stack.results / "facts.json").write_text(json.dumps(self.facts, indent=1))
            f0 = self.facts[0]
            ph.detail = (
                f"kernel {f0['kernel']}, fuse_famfs {f0['fuse_famfs']}, udev {f0['udev']}, "
                f"host state planted {f0['host_state_planted']} (in parallel)"
            )

    def _facts_and_network(self, g: Guest) -> None:
        r = g.run([str(self.stack.python), "-m", "mhd.guest.facts"], timeout=120)
        got = _last_json(r.stdout)
        if not r.ok or got is None:
            raise GuestFailure(f"{g.name}: cannot read the guest's facts: {r.describe()}")
        self.facts[g.spec.host] = {**got, **self.run_facts()}
        if not self.cfg.network or self.cfg.hosts < 2:
            return
        h = g.spec.host
        links = net_links(self.cfg.hosts, self.ws.run_dir)[h]
        argv = [str(self.stack.python), "-m", "mhd.guest.guestnet", str(h), *[str(ln.link) for ln in links]]
        r = g.run(argv, 60)
        if not r.ok:
            raise GuestFailure(f"{g.name}: private network setup failed: {r.describe()}")

    def device_env(self, host: int) -> dict[str, str]:
        info = self.devices[host]
        env = {"DAXMODE_TEST_DEV": info["device"]}
        if len(info.get("devices", [])) > 1:
            env["DAXMODE_TEST_DEV2"] = info["devices"][1]
        return env

    def write_session(self) -> Path:
        data = {
            "backend": self.cfg.backend,
            "kernel": self.stack.kernel.version,
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
        path = self.ws.run_dir / "session.json"
        path.write_text(json.dumps(data, indent=1))
        (self.stack.results / "session.json").write_text(json.dumps(data, indent=1))
        return path

    def keep_running(self) -> None:
        session = self.write_session()
        for g in self.guests:
            g.client.close()
        log("guests are up; Ctrl-C powers them off. To attach:")
        for g in self.guests:
            sock = self.ws.run_dir / f"{g.name}.console"
            log(f"  {g.name} root shell: socat -,rawer UNIX-CONNECT:{sock} (press Enter)")
        log(f"  run a command: qemu/cxl-mhd.sh exec --session {session} --host 0 -- daxmode list")
        log(f"  host-side tests: DAXMODE_VM_SESSION={session} .venv/bin/pytest tests/vm/test_crosshost.py")
        while all(g.alive() for g in self.guests):
            time.sleep(1)
        log("a guest exited")

    def stop_guests(self, graceful: bool) -> None:
        """Power every guest off at once through its agent (or kill them)."""

        def one(g: Guest) -> None:
            try:
                if graceful:
                    g.stop()
                else:
                    g.kill()
            except Exception as e:  # keep stopping the others
                print(f"mhd: cleanup of {g.name}: {e}", file=sys.stderr)

        if self.guests:
            with ThreadPoolExecutor(max_workers=len(self.guests)) as pool:
                list(pool.map(one, self.guests))


@contextlib.contextmanager
def booted(cfg: Config, timing: Timing) -> Iterator[Run]:
    """Prepare, boot every guest and bring its device up; on leaving, power them off (kill them
    when leaving on an exception) and remove the run's files, timed as the teardown phase."""
    suite, stack, ws = prepare(cfg, timing)
    graceful = False
    run = None
    try:
        run = Run(cfg, suite, stack, ws, timing)
        run.start_guests()
        run.wait_ready()
        run.bring_up()
        yield run
        graceful = True
    finally:
        t0 = time.monotonic()
        if run is not None:
            run.stop_guests(graceful)
        ws.close()
        timing.add("teardown", time.monotonic() - t0, "parallel poweroff" if graceful else "killed")


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
