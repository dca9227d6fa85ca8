"""Boot cost of the QEMU harness against a bare ``qemu -kernel`` boot of the same kernel, same run.

Measured side by side, per accelerator (KVM where its probe boot works, TCG always):
  * bare: ``qemu -kernel K -initrd <harness initramfs> ... mhd_probe=1`` -- the kernel boots, /init
    loads the 9p modules, prints a marker and powers off: QEMU start to exit;
  * harness: the real thing on 2 hosts sharing one CXL device -- boot-to-ready per host (QEMU start
    to the guest agent's first answer: 9p overlay root, udevd, venv python), device bring-up per host,
    and the wall time of the cross-host suite (tests/vm/test_crosshost.py) from first QEMU start to
    the last QEMU gone.
Prints boot-to-ready / bare as the harness's overhead ratio.  No targets are asserted here.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from mhd.host import config, preflight, suiterun
from mhd.host.errors import HarnessError
from mhd.host.initramfs import build_initramfs
from mhd.host.kernel import find_module_tree, read_kernel
from mhd.host.run import booted
from mhd.host.timing import Timing

PROJECT = Path(__file__).resolve().parents[1]

SUITE = "tests/vm/test_crosshost.py"


def bare_boot(qemu: str, kernel: Path, initrd: Path, accel: str, workdir: Path) -> float:
    """Seconds from QEMU start to its exit for a kernel that reaches userspace and powers off."""
    console = workdir / f"bare-{accel}.log"
    argv = [
        qemu, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max", "-smp", "1", "-m", "1G",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 rdinit=/init mhd_probe=1 mitigations=off loglevel=4",
        "-serial", f"file:{console}",
    ]  # fmt: skip
    t0 = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)
    dt = time.monotonic() - t0
    if "MHD-PROBE-OK" not in console.read_text(errors="replace"):
        raise RuntimeError(f"bare {accel} boot did not reach userspace (see {console})")
    return dt


def harness_run(accel: str, results: Path) -> dict[str, float]:
    argv = ["--backend", "cxl", "--hosts", "2", "--kvm", "on" if accel == "kvm" else "off"]
    cfg = config.parse_args([*argv, "--results", str(results), "--suite", SUITE])
    timing = Timing()
    out: dict[str, float] = {}
    with booted(cfg, timing) as run:
        for g in run.guests:
            out[f"{g.name}_ready_s"] = g.ready_after or 0.0
        run.gather_facts()
        suiterun.run_host_suite(run)
    phases = {p.name: p.seconds for p in timing.phases}
    out["bringup_s"] = phases["bring-up"]
    # First QEMU start to the last QEMU gone: everything after the prepare phase.
    out["suite_wall_s"] = timing.total() - phases["prepare"]
    parts = run.outcome.parts
    out["passed"] = sum(p.passed for p in parts)
    out["failed"] = sum(len(p.failed) + len(p.unexpected) + len(p.problems) for p in parts)
    print(timing.table())
    return out


def main() -> dict[str, float]:
    kernel_path = config.default_kernel()
    k = read_kernel(kernel_path)
    tree = find_module_tree(preflight.default_modules_for(kernel_path, k.version), k.version)
    initrd = build_initramfs(tree, PROJECT / ".cache" / "initramfs")
    qemu, ver = preflight.find_qemu("qemu-system-x86_64", "cxl")
    work = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    kvm_ok, why = preflight.probe_kvm(qemu, kernel_path, initrd, work)
    print(f"bench_boot: QEMU {'.'.join(map(str, ver))}, kernel {k.version}, {os.cpu_count()} host cores")
    print(f"bench_boot: KVM {'works' if kvm_ok else 'unavailable'} ({why})")
    accels = ["kvm", "tcg"] if kvm_ok else ["tcg"]
    metrics: dict[str, float] = {}
    for accel in accels:
        bare = bare_boot(qemu, kernel_path, initrd, accel, work)
        try:
            h = harness_run(accel, PROJECT / "results" / f"bench-boot-{accel}")
        except HarnessError as e:
            print(f"bench_boot: {accel}: harness failed: {e}")
            metrics[f"{accel}_bare_boot_s"] = bare
            continue
        ready = [v for key, v in h.items() if key.endswith("_ready_s")]
        print(f"bench_boot: {accel}: bare qemu -kernel boot to userspace and exit: {bare:6.1f} s")
        for key, v in h.items():
            if key.endswith("_ready_s"):
                name = key.removesuffix("_ready_s")
                print(f"bench_boot: {accel}: {name} boot-to-ready (overlay root, udevd, agent): {v:6.1f} s")
        print(f"bench_boot: {accel}: device bring-up (2 hosts in parallel):        {h['bringup_s']:6.1f} s")
        print(
            f"bench_boot: {accel}: suite {SUITE} wall time, boot to teardown: {h['suite_wall_s']:6.1f} s "
            f"({int(h['passed'])} passed, {int(h['failed'])} failed)"
        )
        ratio = max(ready) / bare if bare else float("nan")
        print(f"bench_boot: {accel}: harness boot-to-ready / bare boot = {ratio:.2f}x")
        metrics.update({f"{accel}_bare_boot_s": bare, f"{accel}_ready_ratio": ratio})
        metrics.update({f"{accel}_{key}": v for key, v in h.items()})
    if not kvm_ok:
        print("bench_boot: kvm: not measured (KVM guests do not run on this machine)")
    return metrics


if __name__ == "__main__":
    main()
