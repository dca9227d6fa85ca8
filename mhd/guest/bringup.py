"""Guest-side bring-up: from a fresh boot to one dax device in devdax mode.  Runs INSIDE a guest.

``python -m mhd.guest.bringup --backend cxl|nvdimm [--create]`` prints one JSON line: the device name and the
steps taken.  Stdlib only (it must work before daxmode does).

cxl: load the CXL and DAX modules, then create a volatile (ram) region through sysfs, because
cxl-cli 76.1 answers "region type 'ram' not supported yet" (verified-stack.md).  The region comes up
as a dax device bound to kmem with its memory offline (memhp_default_state=offline); it is then moved
to devdax.  Never online it: CXL memory used as RAM under TCG makes the guest crawl.

nvdimm: load the nvdimm modules; the first host (``--create``) writes a devdax namespace with
``map=mem`` (the default ``map=dev`` would keep struct pages on the shared media, which every host
would overwrite); the others re-probe the region so the namespace's info block is found.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

SYS_CXL = "/sys/bus/cxl/devices"
SYS_DAX = "/sys/bus/dax/devices"
DAX_DRIVERS = "/sys/bus/dax/drivers"

CXL_MODULES = ["cxl_acpi", "cxl_pci", "cxl_port", "cxl_mem", "dax_cxl", "device_dax", "kmem", "fsdev_dax"]
NVDIMM_MODULES = ["nfit", "libnvdimm", "nd_pmem", "dax_pmem", "device_dax", "kmem", "fsdev_dax"]

steps: list[str] = []
T0 = time.monotonic()


class BringupError(Exception):
    pass


def log(msg: str) -> None:
    steps.append(msg)
    print(f"bringup: [{time.monotonic() - T0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def write(path: str, value: str) -> None:
    log(f"echo {value} > {path}")
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise BringupError(f"writing {value!r} to {path}: {e.strerror}") from None


def wait_for(pred, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BringupError(f"timed out waiting for {what}")
        time.sleep(0.1)


def modprobe(mods: list[str]) -> None:
    """One ``modprobe -a`` (one exec under TCG, not one per module), then one by one if that fails."""
    r = subprocess.run(["modprobe", "-a", *mods], capture_output=True, text=True)
    if r.returncode == 0:
        log(f"modprobe -a {' '.join(mods)}")
        return
    for m in mods:
        r = subprocess.run(["modprobe", m], capture_output=True, text=True)
        if r.returncode != 0 and not os.path.isdir(f"/sys/module/{m}"):
            # Built-in modules have no .ko; Debian's trees lack modules.builtin, so modprobe fails for them.
            log(f"modprobe {m}: {r.stderr.strip() or 'failed'} (taken as built in or absent)")
        else:
            log(f"modprobe {m}")


def dax_devices() -> list[str]:
    try:
        return sorted(d for d in os.listdir(SYS_DAX) if d.startswith("dax"))
    except FileNotFoundError:
        return []


def sized_dax_devices() -> list[str]:
    out = []
    for d in dax_devices():
        try:
            if int(read(f"{SYS_DAX}/{d}/size")) > 0:
                out.append(d)
        except (OSError, ValueError):
            continue
    return out


def sized_dax_device() -> str | None:
    got = sized_dax_devices()
    return got[0] if got else None


def driver_of(dev: str) -> str | None:
    link = f"{SYS_DAX}/{dev}/driver"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


# ---- cxl -------------------------------------------------------------------------------------


def root_decoder() -> str:
    """The root decoder that can host volatile memory (cap_ram)."""
    for d in sorted(glob.glob(f"{SYS_CXL}/decoder*.*")):
        name = os.path.basename(d)
        if os.path.exists(f"{d}/create_ram_region") and read_or(f"{d}/cap_ram", "1") == "1":
            return name
    raise BringupError("no CXL root decoder with create_ram_region (is cxl_acpi loaded, QEMU >= 8.1?)")


def read_or(path: str, default: str) -> str:
    try:
        return read(path)
    except OSError:
        return default


def endpoint_decoder() -> str:
    eds = sorted(glob.glob(f"{SYS_CXL}/endpoint*/decoder*.0"))
    if not eds:
        raise BringupError("no CXL endpoint decoder (mem0 not enumerated?)")
    return os.path.basename(eds[0])


def create_cxl_ram_region() -> None:
    wait_for(lambda: os.path.isdir(f"{SYS_CXL}/mem0"), "CXL mem0")
    wait_for(lambda: glob.glob(f"{SYS_CXL}/endpoint*/decoder*.0"), "CXL endpoint decoder")
    ram_size = int(read(f"{SYS_CXL}/mem0/ram/size"), 0)
    if ram_size <= 0:
        raise BringupError("mem0 has no volatile capacity")
    rd = root_decoder()
    rdp = f"{SYS_CXL}/{rd}"
    ed = endpoint_decoder()
    edp = f"{SYS_CXL}/{ed}"
    region = read(f"{rdp}/create_ram_region")
    write(f"{rdp}/create_ram_region", region)
    rp = f"{SYS_CXL}/{region}"
    wait_for(lambda: os.path.isdir(rp), f"{region} to appear")
    write(f"{rp}/interleave_granularity", read(f"{rdp}/interleave_granularity"))
    write(f"{rp}/interleave_ways", "1")
    write(f"{edp}/mode", "ram")
    write(f"{edp}/dpa_size", str(ram_size))
    write(f"{rp}/size", str(ram_size))
    write(f"{rp}/target0", ed)
    write(f"{rp}/commit", "1")
    if not os.path.islink(f"{rp}/driver"):
        write("/sys/bus/cxl/drivers/cxl_region/bind", region)
    log(f"{region}: {ram_size} bytes committed on {ed}")


# ---- nvdimm ----------------------------------------------------------------------------------


def nvdimm_regions() -> list[str]:
    return sorted(os.path.basename(r) for r in glob.glob("/sys/bus/nd/devices/region*"))


def nvdimm_namespaces(create: bool, want: int) -> None:
    """One devdax namespace per nvdimm region (host 0 writes them; the others re-probe)."""
    wait_for(lambda: len(nvdimm_regions()) >= want, f"{want} nvdimm region(s)")
    if len(sized_dax_devices()) >= want:
        return
    if create:
        cmds = [
            ["ndctl", "create-namespace", "-f", "-e", f"namespace{r.removeprefix('region')}.0",
             "-m", "devdax", "-M", "mem", "-a", "2M"]
            for r in nvdimm_regions()
        ]  # fmt: skip
    else:
        # The namespaces were written by host 0 after this kernel probed the regions: re-probe them.
        cmds = [["sh", "-c", "ndctl disable-region all && ndctl enable-region all"]]
    for cmd in cmds:
        log(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BringupError(f"{cmd[0]} failed: {r.stderr.strip()}")


# ---- to devdax -------------------------------------------------------------------------------


def daxmode_cli() -> str | None:
    """The project's CLI (preferred: it checks, verifies and rolls back), if this venv has it."""
    exe = shutil.which("daxmode")
    if not exe:
        return None
    try:
        import daxmode.cli  # noqa: F401 - the fork of the warm agent has it already
    except ImportError:
        return None
    return exe


def _run_python(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a venv command, as a warm fork of this process when mhd.guest.warm can (see mhd.guest.warm)."""
    from mhd.guest import warm  # stdlib only; in the agent's fork it is imported already

    return warm.run(cmd, capture_output=True, text=True)


def to_devdax(dev: str) -> None:
    drv = driver_of(dev)
    if drv == "device_dax":
        return
    exe = daxmode_cli()
    if exe:
        cmd = [exe, "set", dev, "devdax"]
        log(" ".join(cmd))
        r = _run_python(cmd)
        if r.returncode != 0:
            raise BringupError(f"daxmode set {dev} devdax failed (rc {r.returncode}): {r.stderr.strip()}")
    else:
        # Plain sysfs: the kmem binding of a CXL ram region with its blocks offline can simply go.
        if drv:
            write(f"{DAX_DRIVERS}/{drv}/unbind", dev)
        # new_id makes device_dax match a KMEM-flagged region and binds it at once (bus.c do_id_store).
        write(f"{DAX_DRIVERS}/device_dax/new_id", dev)
        if driver_of(dev) != "device_dax":
            write(f"{DAX_DRIVERS}/device_dax/bind", dev)
    if driver_of(dev) != "device_dax":
        raise BringupError(f"{dev} is bound to {driver_of(dev)}, not device_dax")
    wait_for(lambda: os.path.exists(f"/dev/{dev}"), f"/dev/{dev}", 10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["cxl", "nvdimm"], required=True)
    ap.add_argument("--create", action="store_true", help="nvdimm: write the namespaces (first host only)")
    ap.add_argument("--devices", type=int, default=1, help="dax devices to expect (nvdimm: one per nvdimm)")
    args = ap.parse_args()
    try:
        if args.backend == "cxl":
            modprobe(CXL_MODULES)
            if not sized_dax_device():
                create_cxl_ram_region()
        else:
            modprobe(NVDIMM_MODULES)
            nvdimm_namespaces(args.create, args.devices)
        devs = wait_for(
            lambda: (d := sized_dax_devices()) and len(d) >= args.devices and d, "the dax devices", 60
        )
        for d in devs:
            log(f"{d}: driver {driver_of(d)}")
            to_devdax(d)
        dev = devs[0]
        info = {
            "device": dev,
            "devices": devs,
            "size": int(read(f"{SYS_DAX}/{dev}/size")),
            "align": int(read_or(f"{SYS_DAX}/{dev}/align", "0")),
            "driver": driver_of(dev),
            "steps": steps,
        }
    except BringupError as e:
        print(json.dumps({"error": str(e), "steps": steps}))
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
