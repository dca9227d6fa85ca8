#!/usr/bin/env bash
# make kernel-test: build Debian's Linux 7.3 source with our demonstration patch and the shipped
# fragment, boot it on two hosts sharing one CXL device, and check in every guest that
#   - it runs the kernel just built (uname -r, /proc/config.gz),
#   - the CXL region committed although the guest CPU shows the hypervisor bit
#     (CONFIG_CXL_REGION_INVALIDATION_TEST instead of hiding it),
#   - the patch is live: binding the device to fsdev_dax logs "daxmode-demo: fsdev bound".
#
#   bash qemu/kernel-test.sh [KSRC=<tree>] [PATCHES=<dir>] [KCONFIG=<fragment>] [HOSTS=n] [CACHE=dir]
#
# Without KSRC, Debian's linux-source-7.3 (trixie-backports) is fetched with `apt-get download`
# through a private sources list and state dir (the host's apt sources are not touched), unpacked
# with `dpkg -x` and extracted under $CACHE. The build is cached (qemu/build-kernel.sh); a first
# build takes about 30 minutes on 2 cores, so this is not part of CI.
#
# Inside a guest the harness runs `kernel-test.sh --guest <release>` (the checks above; name
# some of release, region, fsdev after the release to run only those).
# Exit codes: 0 all checks passed; 1 a check failed in a guest; 2 usage; 3 fetching the source
# failed; 4 the harness lacks --show-hypervisor; build-kernel.sh's codes (20-25) pass through;
# other codes are the harness's (qemu/cxl-mhd.sh).
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

check_fsdev() { # binding fsdev_dax shows the demo patch's line
    local dev="${DAXMODE_TEST_DEV:-}" dax=/sys/bus/dax
    [[ -n "$dev" && -e "$dax/devices/$dev" ]] || no "no dax device (DAXMODE_TEST_DEV='$dev')"
    [[ -d "$dax/drivers/fsdev_dax" ]] || modprobe fsdev_dax || no "cannot load fsdev_dax"
    local before="" now="" line=""
    [[ -L "$dax/devices/$dev/driver" ]] && before="$(basename "$(readlink "$dax/devices/$dev/driver")")"
    [[ -z "$before" ]] || put "$dev" "$dax/drivers/$before/unbind"
    put "$dev" "$dax/drivers/fsdev_dax/new_id"
    # new_id may already have probed it; bind only if it is still unbound.
    [[ -L "$dax/devices/$dev/driver" ]] || put "$dev" "$dax/drivers/fsdev_dax/bind"
    [[ -L "$dax/devices/$dev/driver" ]] && now="$(basename "$(readlink "$dax/devices/$dev/driver")")"
    line="$(dmesg | grep "$dev: daxmode-demo: fsdev bound" | tail -n1)" || true
    # Put the device back before judging, so a failure leaves it as found.
    [[ "$now" != fsdev_dax ]] || put "$dev" "$dax/drivers/fsdev_dax/unbind"
    put "$dev" "$dax/drivers/fsdev_dax/remove_id"
    [[ -z "$before" ]] || put "$dev" "$dax/drivers/$before/bind"
    [[ "$now" == fsdev_dax ]] || no "$dev is bound to '${now:-nothing}' after binding it to fsdev_dax"
    [[ -n "$line" ]] || no "$dev bound to fsdev_dax but the kernel logged no 'daxmode-demo' line (patch not applied?)"
    ok "patched fsdev_dax probe: $line"
    ok "$dev back on ${before:-no driver}"
}

if [[ "${1:-}" == --guest ]]; then
    # kernel-test.sh --guest <expected release> [release|region|fsdev ...] (default: all three)
    [[ $# -ge 2 ]] || {
        echo "usage: kernel-test.sh --guest <expected release> [release|region|fsdev ...]" >&2
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

KSRC="" PATCHES="$ROOT/qemu/patches" KCONFIG="" HOSTS=2 CACHE=""
for arg in "$@"; do
    case "$arg" in
    KSRC=* | PATCHES=* | KCONFIG=* | HOSTS=* | CACHE=*) printf -v "${arg%%=*}" '%s' "${arg#*=}" ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 0
        ;;
    *) fail 2 "unknown argument '$arg' (expected KSRC=, PATCHES=, KCONFIG=, HOSTS=, CACHE=)" ;;
    esac
done
[[ "$HOSTS" =~ ^[1-8]$ ]] || fail 2 "HOSTS must be 1..8, not '$HOSTS'"
CACHE="${CACHE:-$ROOT/.cache}"

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

line="$(bash "$ROOT/qemu/build-kernel.sh" KSRC="$KSRC" PATCHES="$PATCHES" KCONFIG="$KCONFIG" CACHE="$CACHE")" || exit $?
read -r _ bzimage _ modules <<<"$line"
release="$(sed -n 's/^release=//p' "$modules/build-info")"
say "kernel $release: $line"

harness=(bash "$ROOT/qemu/cxl-mhd.sh")
help="$("${harness[@]}" --help 2>&1 || true)"
[[ "$help" == *--show-hypervisor* ]] ||
    fail 4 "qemu/cxl-mhd.sh has no --show-hypervisor option: it cannot boot without hiding the hypervisor bit"
"${harness[@]}" --backend cxl --hosts "$HOSTS" --kernel "$bzimage" --modules "$modules" --show-hypervisor \
    --results "$ROOT/results/kernel-test" --cmd "bash $ROOT/qemu/kernel-test.sh --guest $release"
exit $?
}
