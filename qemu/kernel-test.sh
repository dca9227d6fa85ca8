#!/usr/bin/env bash
# make kernel-test: build Debian's Linux 7.3 source with our demonstration patch and the shipped
# fragment, boot it on two hosts sharing one CXL device, and check in every guest that
#   - it runs the kernel just built (uname -r, /proc/config.gz),
#   - the CXL region committed although the guest CPU shows the hypervisor bit
#     (CONFIG_CXL_REGION_INVALIDATION_TEST instead of hiding it),
#   - the patch is live: binding the device to fsdev_dax logs "daxmode-demo: fsdev bound".
#
#   bash qemu/kernel-test.sh [KSRC=<tree>] [PATCHES=<dir>] [KCONFIG=<fragment>] [HOSTS=n] [CACHE=dir]
#   bash qemu/kernel-test.sh FAMFS=1|v1 PATCHES=<famfs mbox> [ADAPT=<dir>] [SKIPS=<name>] [--build-only] [...]
#   bash qemu/kernel-test.sh --fetch-only      (print the path of Debian's source tree, fetching it)
#
# FAMFS=1 (make famfs-kernel-test) builds the famfs fuse series V10 (PATCHES, an mbox of its 10
# patches: docs/kernel.md says how to get it) with our 7.3 adaptations (ADAPT, default
# qemu/patches/famfs-7.3) and, in each of HOSTS guests sharing one CXL device, checks instead
#   - the fresh release runs; /proc/config.gz has FUSE_FAMFS_DAX=y, FS_DAX=y, DEV_DAX_FSDEV;
#   - the CXL region committed with the hypervisor bit visible (as above);
#   - /proc/kallsyms has famfs_fuse_iomap_begin (the series' iomap code is linked in);
#   - the dax device binds to fsdev_dax and back to its driver;
#   - a fuse connection's INIT offers FUSE_DAX_FMAP (bit 43) to a mounter with CAP_SYS_RAWIO and
#     not to one without (qemu/fuse_init_probe.py),
# then boots the hosts again and runs the VM suite (tests/vm) on that kernel: the harness judges
# every skip against this kernel's declared-skips file (SKIPS, default famfs-v10:
# qemu/skips/famfs-v10.toml), which declares no famfs skip, so a famfs mount or DAX-path test that
# skips for want of a famfs kernel fails the run. --build-only stops after the build (make famfs-kernel).
#
# FAMFS=v1 (make famfs-v1-kernel-test) builds the standalone famfs series (RFC v2, April 2024:
# dev_dax_iomap + fs/famfs; PATCHES, default $CACHE/famfs-v1/famfs-v1.mbox) on Debian's
# linux-source-6.12 (trixie) with our adaptations (ADAPT, default qemu/patches/famfs-v1-6.12) and
# the fragment qemu/famfs-v1.config, and checks in each guest
#   - the fresh release runs; /proc/config.gz has FAMFS=m, FS_DAX=y, DEV_DAX_IOMAP=y;
#   - the CXL region committed with the hypervisor bit visible;
#   - famfs.ko loads, `famfs` is in /proc/filesystems, famfs_kabi_version reads 42;
#   - a famfs mount of the dax device answers the ioctls: FAMFSIOC_NOP, MAP_CREATE on a new file,
#     MAP_GET and MAP_GETEXT give the map back, a bad map is refused (qemu/famfs_v1_probe.py);
# then boots the hosts again and runs the VM suite; skips are judged against SKIPS, default famfs-v1
# (qemu/skips/famfs-v1.toml: what a 6.12 kernel without fsdev_dax or fuse-famfs justifies).
#
# VM_LOCK=<file> (argument or environment) holds that lock with flock(1) around each boot only,
# so a machine-wide VM lock is not held during the long build.
#
# Without KSRC, Debian's linux-source-7.3 (trixie-backports) is fetched with `apt-get download`
# through a private sources list and state dir (the host's apt sources are not touched), unpacked
# with `dpkg -x` and extracted under $CACHE. The build is cached (qemu/build-kernel.sh); a first
# build takes about 30 minutes on 2 cores, so this is not part of CI.
#
# Inside a guest the harness runs `kernel-test.sh --guest <release>` (the checks above; name
# some of release, region, fsdev, famfs-config, famfs-fsdev, init after the release to run only
# those).
# Exit codes: 0 all checks passed; 1 a check failed in a guest; 2 usage; 3 fetching the source
# failed; 4 the harness lacks --show-hypervisor; 5 FAMFS=1 without the series (the message says
# how to get it); 6 a skip in the suite that this kernel does not justify; build-kernel.sh's
# codes (20-25) pass through; other codes are the harness's (qemu/cxl-mhd.sh).
set -euo pipefail
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE_PKG="linux-source-7.3"
SUITE="trixie-backports"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# ---------------------------------------------------------------------------------------------
# In the guest: the checks. One "ok:" line per check, one "FAIL:" line and rc 1 on the first miss.
# ---------------------------------------------------------------------------------------------
ok() { echo "ok: $*"; }
no() {
    echo "FAIL: $*"
    exit 1
}
put() { # put <value> <sysfs file>
    echo "$1" 2>/dev/null >"$2" || no "writing '$1' to $2 failed"
}

check_release() { # the guest runs the build under test
    [[ "$(uname -r)" == "$1" ]] || no "guest runs $(uname -r), expected the fresh build $1"
    ok "running $(uname -r)"
    zcat /proc/config.gz | grep -qx CONFIG_CXL_REGION_INVALIDATION_TEST=y ||
        no "CONFIG_CXL_REGION_INVALIDATION_TEST is not =y in /proc/config.gz"
}

check_region() { # the region committed with the hypervisor bit visible
    grep -qw hypervisor /proc/cpuinfo || no "the CPU hides the hypervisor bit: the test must run without that trick"
    ok "CPUID hypervisor bit visible to the guest"
    local committed=() r
    for r in /sys/bus/cxl/devices/region*; do
        [[ -e "$r/commit" && "$(cat "$r/commit")" == 1 ]] && committed+=("$(basename "$r")")
    done
    ((${#committed[@]})) || no "no committed CXL region under /sys/bus/cxl/devices"
    local log
    log="$(dmesg)"
    [[ "$log" != *"Failed to synchronize CPU cache state"* ]] ||
        no "the kernel logged 'Failed to synchronize CPU cache state'"
    local bypass
    bypass="$(grep -m1 "Bypassing cpu_cache_invalidate_memregion() for testing" <<<"$log")" ||
        no "no 'Bypassing cpu_cache_invalidate_memregion()' line: the commit did not take the test path"
    ok "CXL region(s) committed: ${committed[*]}; kernel: $bypass"
}

# fsdev_round_trip: bind the test device to fsdev_dax and put it back on its driver. Sets
# DEV, BEFORE (its driver at the start), NOW (after binding fsdev_dax), BACK (at the end) and
# LOG (the kernel lines logged meanwhile); judging is left to the caller, after the device is back.
fsdev_round_trip() {
    local dax=/sys/bus/dax mark
    DEV="${DAXMODE_TEST_DEV:-}" BEFORE="" NOW="" BACK=""
    [[ -n "$DEV" && -e "$dax/devices/$DEV" ]] || no "no dax device (DAXMODE_TEST_DEV='$DEV')"
    [[ -d "$dax/drivers/fsdev_dax" ]] || modprobe fsdev_dax || no "cannot load fsdev_dax"
    mark="$(dmesg | wc -l)"
    [[ -L "$dax/devices/$DEV/driver" ]] && BEFORE="$(basename "$(readlink "$dax/devices/$DEV/driver")")"
    [[ -z "$BEFORE" ]] || put "$DEV" "$dax/drivers/$BEFORE/unbind"
    put "$DEV" "$dax/drivers/fsdev_dax/new_id"
    # new_id may already have probed it; bind only if it is still unbound.
    [[ -L "$dax/devices/$DEV/driver" ]] || put "$DEV" "$dax/drivers/fsdev_dax/bind"
    [[ -L "$dax/devices/$DEV/driver" ]] && NOW="$(basename "$(readlink "$dax/devices/$DEV/driver")")"
    LOG="$(dmesg | tail -n +"$((mark + 1))")"
    # Put the device back before judging, so a failure leaves it as found.
    [[ "$NOW" != fsdev_dax ]] || put "$DEV" "$dax/drivers/fsdev_dax/unbind"
    put "$DEV" "$dax/drivers/fsdev_dax/remove_id"
    [[ -z "$BEFORE" ]] || put "$DEV" "$dax/drivers/$BEFORE/bind"
    [[ -L "$dax/devices/$DEV/driver" ]] && BACK="$(basename "$(readlink "$dax/devices/$DEV/driver")")"
    [[ "$NOW" == fsdev_dax ]] || no "$DEV is bound to '${NOW:-nothing}' after binding it to fsdev_dax"
    [[ "$BACK" == "$BEFORE" ]] || no "$DEV is on '${BACK:-nothing}' after rebinding, not on '${BEFORE:-nothing}'"
}

check_fsdev() { # binding fsdev_dax shows the demo patch's line
    fsdev_round_trip
    local line
    line="$(grep "$DEV: daxmode-demo: fsdev bound" <<<"$LOG" | tail -n1)" || true
    [[ -n "$line" ]] || no "$DEV bound to fsdev_dax but the kernel logged no 'daxmode-demo' line (patch not applied?)"
    ok "patched fsdev_dax probe: $line"
    ok "$DEV back on ${BEFORE:-no driver}"
}

check_famfs_config() { # the famfs options are in the running kernel, its iomap code linked in
    local cfg opt
    cfg="$(zcat /proc/config.gz)" || no "cannot read /proc/config.gz"
    for opt in CONFIG_FUSE_FAMFS_DAX=y CONFIG_FS_DAX=y; do
        grep -qx "$opt" <<<"$cfg" || no "/proc/config.gz lacks $opt: $(grep "${opt%=*}[= ]" <<<"$cfg" || echo unset)"
    done
    opt="$(grep -E '^CONFIG_DEV_DAX_FSDEV=[ym]$' <<<"$cfg")" || no "/proc/config.gz has no CONFIG_DEV_DAX_FSDEV=y|m"
    ok "config: CONFIG_FUSE_FAMFS_DAX=y CONFIG_FS_DAX=y $opt"
    grep -q "CONFIG_FUSE_IO_URING=y" <<<"$cfg" && no "CONFIG_FUSE_IO_URING=y: bit 43 would also mean FUSE_HAS_IO_URING_BUFPOOL"
    local sym
    sym="$(grep -m1 -w famfs_fuse_iomap_begin /proc/kallsyms)" || no "/proc/kallsyms has no famfs_fuse_iomap_begin"
    ok "kallsyms: ${sym#* }"
}

check_famfs_fsdev() { # the dax device binds to fsdev_dax (fs-dax mode, what famfs mounts) and back
    fsdev_round_trip
    grep -iE 'dax|famfs|fsdev' <<<"$LOG" | sed 's/^/  dmesg: /' || true
    ok "$DEV bound to fsdev_dax (from ${BEFORE:-no driver})"
    ok "$DEV back on ${BEFORE:-no driver}"
}

check_init() { # INIT offers FUSE_DAX_FMAP to a mounter with CAP_SYS_RAWIO, and only to one
    local probe here with without
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    probe=(/usr/bin/python3 "$here/fuse_init_probe.py")
    with="$("${probe[@]}" 2>&1)" || no "INIT probe as root failed: $with"
    without="$(setpriv --bounding-set=-sys_rawio "${probe[@]}" 2>&1)" ||
        no "INIT probe without CAP_SYS_RAWIO failed: $without"
    [[ "$with" == *" cap_sys_rawio=1"* && "$without" == *" cap_sys_rawio=0"* ]] ||
        no "the probes did not run with and without CAP_SYS_RAWIO: '$with' / '$without'"
    [[ "$with" == *" init_ext=1 "* && "$with" == *" dax_fmap=1 "* ]] ||
        no "INIT does not offer FUSE_DAX_FMAP (1<<43) to a mounter with CAP_SYS_RAWIO: $with"
    ok "INIT with CAP_SYS_RAWIO: $with"
    [[ "$without" == *" dax_fmap=0 "* ]] ||
        no "INIT offers FUSE_DAX_FMAP (1<<43) to a mounter without CAP_SYS_RAWIO: $without"
    ok "INIT without CAP_SYS_RAWIO: $without"
}

check_famfs_v1_config() { # the standalone famfs options are in the running kernel
    local cfg opt
    cfg="$(zcat /proc/config.gz)" || no "cannot read /proc/config.gz"
    for opt in CONFIG_FAMFS=m CONFIG_FS_DAX=y CONFIG_DEV_DAX_IOMAP=y; do
        grep -qx "$opt" <<<"$cfg" || no "/proc/config.gz lacks $opt: $(grep "${opt%=*}[= ]" <<<"$cfg" || echo unset)"
    done
    ok "config: CONFIG_FAMFS=m CONFIG_FS_DAX=y CONFIG_DEV_DAX_IOMAP=y"
    local sym
    sym="$(grep -m1 -w fs_dax_get /proc/kallsyms)" || no "/proc/kallsyms has no fs_dax_get (dev_dax_iomap not linked in)"
    ok "kallsyms: ${sym#* }"
}

check_famfs_v1_module() { # famfs.ko loads and registers the file system
    grep -qw famfs /proc/filesystems || modprobe famfs || no "modprobe famfs failed"
    grep -qw famfs /proc/filesystems || no "famfs is not in /proc/filesystems after modprobe"
    ok "famfs.ko loaded; /proc/filesystems: $(grep -w famfs /proc/filesystems | tr '\t' ' ')"
    local kabi=/sys/module/famfs/parameters/famfs_kabi_version
    [[ -r "$kabi" ]] || no "no $kabi"
    ok "famfs_kabi_version=$(cat "$kabi")"
}

check_famfs_v1_ioctl() { # a mount of the dax device answers the famfs ioctls
    local here out
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    out="$(/usr/bin/python3 "$here/famfs_v1_probe.py" "/dev/${DAXMODE_TEST_DEV:-}" 2>&1)" || no "famfs ioctl probe: $out"
    while IFS= read -r line; do ok "$line"; done <<<"$out"
}

if [[ "${1:-}" == --guest ]]; then
    # kernel-test.sh --guest <expected release> [release|region|fsdev|famfs-config|famfs-fsdev|init ...]
    # (default: release region fsdev)
    [[ $# -ge 2 ]] || {
        echo "usage: kernel-test.sh --guest <expected release> [release|region|fsdev|famfs-config|famfs-fsdev|init ...]" >&2
        exit 2
    }
    want="$2"
    shift 2
    for step in "${@:-release region fsdev}"; do
        for s in $step; do
            case "$s" in
            release) check_release "$want" ;;
            region) check_region ;;
            fsdev) check_fsdev ;;
            famfs-config) check_famfs_config ;;
            famfs-fsdev) check_famfs_fsdev ;;
            init) check_init ;;
            famfs-v1-config) check_famfs_v1_config ;;
            famfs-v1-module) check_famfs_v1_module ;;
            famfs-v1-ioctl) check_famfs_v1_ioctl ;;
            *) no "unknown check '$s'" ;;
            esac
        done
    done
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# On the host.
# ---------------------------------------------------------------------------------------------
say() { printf 'kernel-test: %s\n' "$*" >&2; }
fail() {
    printf 'kernel-test: error: %s\n' "$2" >&2
    exit "$1"
}

KSRC="" PATCHES="" ADAPT="" KCONFIG="" HOSTS=2 CACHE="" FAMFS="" SKIPS="" BUILD_ONLY="" FETCH_ONLY="" VM_LOCK="${VM_LOCK:-}"
for arg in "$@"; do
    case "$arg" in
    KSRC=* | PATCHES=* | ADAPT=* | KCONFIG=* | HOSTS=* | CACHE=* | FAMFS=* | SKIPS=* | VM_LOCK=*) printf -v "${arg%%=*}" '%s' "${arg#*=}" ;;
    --build-only) BUILD_ONLY=1 ;;
    --fetch-only) FETCH_ONLY=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 0
        ;;
    *) fail 2 "unknown argument '$arg' (expected KSRC=, PATCHES=, ADAPT=, KCONFIG=, HOSTS=, CACHE=, FAMFS=1, SKIPS=, VM_LOCK=, --build-only)" ;;
    esac
done
[[ "$HOSTS" =~ ^[1-8]$ ]] || fail 2 "HOSTS must be 1..8, not '$HOSTS'"
[[ -z "$FAMFS" || "$FAMFS" == 1 || "$FAMFS" == v1 ]] || fail 2 "FAMFS must be 1, v1 or empty, not '$FAMFS'"
CACHE="${CACHE:-$ROOT/.cache}"
SERIES_HELP="the famfs fuse series V10 is not in this repository (it is unmerged, other people's code).
  Get it into an mbox, e.g.:  b4 am -o - 20260331123702.35052-1-john@jagalactic.com > $CACHE/famfs-v10/famfs-v10.mbox
  (or save the 10 patch mails of 'famfs: port into fuse' V10 from the linux-cxl/nvdimm list archive),
  then pass it with PATCHES=<mbox> (default $CACHE/famfs-v10/famfs-v10.mbox); docs/kernel.md has the details"
if [[ "$FAMFS" == 1 ]]; then
    [[ -n "$PATCHES" ]] || PATCHES="$CACHE/famfs-v10/famfs-v10.mbox"
    [[ -f "$PATCHES" ]] || fail 5 "no famfs series at PATCHES=$PATCHES: $SERIES_HELP"
    ADAPT="${ADAPT:-$ROOT/qemu/patches/famfs-7.3}"
elif [[ "$FAMFS" == v1 ]]; then
    # The standalone series was posted against 6.9-rc; Debian's nearest is 6.12 (trixie).
    SUITE_PKG="linux-source-6.12" SUITE="trixie"
    [[ -n "$PATCHES" ]] || PATCHES="$CACHE/famfs-v1/famfs-v1.mbox"
    [[ -f "$PATCHES" ]] || fail 5 "no famfs series at PATCHES=$PATCHES: the standalone famfs series (RFC v2, 'Introduce the famfs shared-memory file system', April 2024) is not in this repository; docs/kernel.md section 8 says how to get it"
    ADAPT="${ADAPT:-$ROOT/qemu/patches/famfs-v1-6.12}"
    KCONFIG="${KCONFIG:-$ROOT/qemu/famfs-v1.config}"
else
    PATCHES="${PATCHES:-$ROOT/qemu/patches}"
fi

# Debian's source package, through a private apt state (never the host's sources.list).
fetch_source() {
    local apt="$CACHE/apt-$SUITE-src" dest="$CACHE/$SUITE_PKG"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0)
    say "fetching $SUITE_PKG from $SUITE (private apt state in $apt)"
    apt-get "${opts[@]}" -q update >&2 || fail 3 "apt-get update for $SUITE failed"
    local ver
    ver="$(apt-cache "${opts[@]}" policy "$SUITE_PKG" | sed -n 's/^ *Candidate: //p')"
    [[ -n "$ver" && "$ver" != "(none)" ]] || fail 3 "$SUITE has no $SUITE_PKG"
    (cd "$apt/debs" && apt-get "${opts[@]}" -q download "$SUITE_PKG=$ver" >&2) || fail 3 "apt-get download $SUITE_PKG=$ver failed"
    local tmp
    tmp="$(mktemp -d "$CACHE/.tmp-$SUITE_PKG.XXXXXX")"
    dpkg -x "$apt/debs/${SUITE_PKG}_${ver//:/%3a}_all.deb" "$tmp/deb" || fail 3 "dpkg -x of $SUITE_PKG failed"
    tar -xJf "$tmp/deb/usr/src/$SUITE_PKG.tar.xz" -C "$tmp" || fail 3 "extracting $SUITE_PKG.tar.xz failed"
    rm -rf "$tmp/deb"
    mv "$tmp/$SUITE_PKG" "$dest"
    rmdir "$tmp"
    say "$SUITE_PKG $ver in $dest"
}

if [[ -z "$KSRC" ]]; then
    KSRC="$CACHE/$SUITE_PKG"
    [[ -f "$KSRC/Makefile" ]] || fetch_source
fi
if [[ -n "$FETCH_ONLY" ]]; then
    echo "$KSRC"
    exit 0
fi

line="$(bash "$ROOT/qemu/build-kernel.sh" KSRC="$KSRC" PATCHES="$PATCHES" ADAPT="$ADAPT" KCONFIG="$KCONFIG" CACHE="$CACHE")" || exit $?
read -r _ bzimage _ modules <<<"$line"
release="$(sed -n 's/^release=//p' "$modules/build-info")"
say "kernel $release: $line"
say "build: $(grep -E '^(compile|compile_cpu|total)_seconds=' "$modules/build-info" | tr '\n' ' ')"
if [[ "$FAMFS" == v1 ]]; then
    say "config: $(grep -E '^CONFIG_(FAMFS|DEV_DAX_IOMAP|FS_DAX)[= ]' "$modules/config" | tr '\n' ' ')"
    grep -qx CONFIG_FAMFS=m "$modules/config" ||
        fail 1 "the build's config lacks CONFIG_FAMFS=m (report: $modules/config-report.txt)"
elif [[ "$FAMFS" == 1 ]]; then
    say "config: $(grep -E '^CONFIG_(FUSE_FAMFS_DAX|DEV_DAX_FSDEV|FS_DAX|FUSE_IO_URING)[= ]|^# CONFIG_FUSE_IO_URING ' "$modules/config" | tr '\n' ' ')"
    grep -qx CONFIG_FUSE_FAMFS_DAX=y "$modules/config" ||
        fail 1 "the build's config lacks CONFIG_FUSE_FAMFS_DAX=y (report: $modules/config-report.txt)"
fi
if [[ -n "$BUILD_ONLY" ]]; then
    echo "$line"
    exit 0
fi

harness=(bash "$ROOT/qemu/cxl-mhd.sh")
help="$("${harness[@]}" --help 2>&1 || true)"
[[ "$help" == *--show-hypervisor* ]] ||
    fail 4 "qemu/cxl-mhd.sh has no --show-hypervisor option: it cannot boot without hiding the hypervisor bit"
boot=()
[[ -z "$VM_LOCK" ]] || boot=(flock "$VM_LOCK")
boot+=("${harness[@]}" --backend cxl --hosts "$HOSTS" --kernel "$bzimage" --modules "$modules" --show-hypervisor)
if [[ "$FAMFS" != 1 ]]; then
    "${boot[@]}" --results "$ROOT/results/kernel-test" --cmd "bash $ROOT/qemu/kernel-test.sh --guest $release"
    exit $?
fi

# famfs: the kernel-level checks, then the VM suite on the same kernel.
res="$ROOT/results/famfs-kernel-test" checks="release region famfs-config famfs-fsdev init"
skips="${SKIPS:-famfs-v10}"
if [[ "$FAMFS" == v1 ]]; then
    res="$ROOT/results/famfs-v1-kernel-test" checks="release region famfs-v1-config famfs-v1-module famfs-v1-ioctl"
    skips="${SKIPS:-famfs-v1}"
fi
rm -rf "$res/kernel" "$res/suite"
mkdir -p "$res"
say "booting $HOSTS hosts for the kernel-level famfs checks (results in $res/kernel)"
rc=0
"${boot[@]}" --results "$res/kernel" \
    --cmd "bash $ROOT/qemu/kernel-test.sh --guest $release $checks" || rc=$?
((rc == 0)) || fail "$rc" "the kernel-level famfs checks failed (rc $rc; logs in $res/kernel)"
say "booting $HOSTS hosts again for the VM suite on $release (results in $res/suite)"
"${boot[@]}" --results "$res/suite" --suite tests/vm --skips "$skips" || rc=$?
if ((rc == 1)) && python3 - "$res/suite/verdict.json" <<'PY'; then
import json, sys
v = json.load(open(sys.argv[1]))
sys.exit(0 if v["unexpected_skips"] and not v["failed"] and not v["problems"] else 1)
PY
    fail 6 "the VM suite skipped tests that $release does not justify (see above; qemu/skips/$skips.toml)"
fi
((rc == 0)) || fail "$rc" "the VM suite failed on $release (rc $rc; logs in $res/suite)"
say "famfs kernel $release: kernel checks and VM suite passed; boot with: $line"
exit 0
}
