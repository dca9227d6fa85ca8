#!/usr/bin/env bash
# make ndctl-test: ndctl's own dax and cxl test suites on the kernel under test, the way kernel
# developers run them (pmem/run_qemu's --nfit-test-run / --cxl-test-run), in daxmode's harness.
#
#   bash qemu/ndctl-test.sh [FAMFS=v10|v1] [KERNEL=<build dir>|KERNEL=<bzImage> MODULES=<dir>]
#                           [KSRC=<tree>] [TESTS="a.sh b.sh"] [SKIPS=<file>] [CACHE=dir] [VM_LOCK=file]
#
# 1. The kernel and its unit-test modules (nfit_test, cxl_test: tools/testing/nvdimm and
#    tools/testing/cxl) from one source tree and one .config, by qemu/build-kernel.sh with
#    TEST_MODULES and the fragment qemu/ndctl-test.config, which makes the drivers those modules
#    rebuild with --wrap into modules (their config_check.c files demand it):
#      default    Debian's linux-source-7.3 (fetched by kernel-test.sh --fetch-only)
#      FAMFS=v10  the same plus the famfs fuse series V10 and our adaptations (as make famfs-kernel)
#      FAMFS=v1   KSRC=<a famfs v1 tree> (not fetched: no such tree is packaged anywhere)
#      KERNEL=    a build-kernel.sh product made with TEST_MODULES (its updates/ holds the modules)
#      KERNEL=debian  Debian's own 7.3.4+deb13-amd64 from make setup, without unit-test modules: only
#                 the tests that need none run; qemu/ndctl-skips/debian-stock.skips declares the
#                 others `!not-run` with the reason below
#      UNIT_MODULES=none KERNEL=<dir> [FAMFS=v10]  the same for any kernel built without them (e.g.
#                 make famfs-kernel's, whose qemu/famfs.config has CXL_BUS=y); skips file
#                 qemu/ndctl-skips/<kernel>-stock.skips
#    Debian's own 7.3.4+deb13-amd64 cannot be used: its config has CXL_BUS=y and lacks
#    CXL_REGION_INVALIDATION_TEST and NVDIMM_SECURITY_TEST (cxl_test's config_check fails), and its
#    headers want gcc-14 options (-fmin-function-alignment) that the build machines' gcc-12 rejects.
# 2. ndctl 85 with its tests (meson -Dtest=enabled -Ddestructive=enabled) in $CACHE/ndctl-85/build,
#    from Debian's source package (apt-get source ndctl=85-1 through a private sources list), or
#    from NDCTL_SRC=<tree of ndctl's v85 tag> where the mirror serves no source packages.
# 3. One guest (qemu/cxl-mhd.sh --backend nvdimm) with a 6 GiB labelled nvdimm (daxctl-devices.sh and
#    daxctl-famfs.sh create a 4 GiB devdax namespace on ACPI.NFIT) and the module tree whose
#    updates/ directory holds the unit-test modules; qemu/ndctl-guest.sh checks they are the ones
#    modprobe resolves and runs `meson test` on TESTS (default: daxctl-devices.sh daxctl-create.sh
#    daxctl-famfs.sh and every test of ndctl's cxl suite).
# 4. qemu/ndctl_verdict.py: a table per test (pass / skip / fail with ndctl's own reason) in
#    results/ndctl-test/<kernel>/ndctl-summary.md; a skip not declared in SKIPS (default
#    qemu/ndctl-skips/<kernel>.skips), any failure, or a declared skip that ran fails the run.
#
# Exit codes: 0 only passes and declared skips; 1 a test failed or skipped undeclared; 2 usage;
# 5 no ndctl 85 source (the message says how to get it); 6 ndctl's build failed or its build
# dependencies are missing (qemu/ndctl-build-deps.txt); 7 the kernel build has no unit-test
# modules; build-kernel.sh's codes (20-25) and the harness's pass through.
set -euo pipefail
{

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NDCTL_VERSION=85
TEST_MODULE_DIRS="tools/testing/nvdimm tools/testing/cxl"
DAX_TESTS="daxctl-devices.sh daxctl-create.sh daxctl-famfs.sh"

say() { printf 'ndctl-test: %s\n' "$*" >&2; }
fail() {
    printf 'daxmode: ndctl-test: %s\n' "$2" >&2
    exit "$1"
}

FAMFS="" KERNEL="" MODULES="" KSRC="" TESTS="" SKIPS="" CACHE="" VM_LOCK="${VM_LOCK:-}" NDCTL_SRC="${NDCTL_SRC:-}"
UNIT_MODULES=""
for arg in "$@"; do
    case "$arg" in
    FAMFS=* | KERNEL=* | MODULES=* | KSRC=* | TESTS=* | SKIPS=* | CACHE=* | VM_LOCK=* | NDCTL_SRC=* | UNIT_MODULES=*)
        printf -v "${arg%%=*}" '%s' "${arg#*=}"
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 0
        ;;
    *) fail 2 "unknown argument '$arg' (expected FAMFS=, KERNEL=, MODULES=, KSRC=, TESTS=, SKIPS=, CACHE=, VM_LOCK=, NDCTL_SRC=, UNIT_MODULES=none)" ;;
    esac
done
[[ -z "$FAMFS" || "$FAMFS" == v10 || "$FAMFS" == v1 ]] || fail 2 "FAMFS must be v10 or v1, not '$FAMFS'"
[[ -z "$UNIT_MODULES" || "$UNIT_MODULES" == none ]] || fail 2 "UNIT_MODULES can only be 'none'"
[[ -z "$UNIT_MODULES" || -n "$KERNEL" ]] || fail 2 "UNIT_MODULES=none needs KERNEL=<a built kernel>"
[[ -z "$FAMFS" || -z "$KERNEL" || -n "$UNIT_MODULES" ]] ||
    fail 2 "give FAMFS= or KERNEL=, not both (FAMFS= with KERNEL= only names the kernel for UNIT_MODULES=none)"
[[ "$FAMFS" != v1 || -n "$KSRC" ]] ||
    fail 2 "FAMFS=v1 needs KSRC=<a famfs v1 kernel tree>: no famfs v1 tree is packaged or fetched here"
CACHE="$(mkdir -p "${CACHE:-$ROOT/.cache}" && cd "${CACHE:-$ROOT/.cache}" && pwd -P)"
NDIR="$CACHE/ndctl-$NDCTL_VERSION"

# --- ndctl 85 ----------------------------------------------------------------------------------
check_deps() {
    local missing=() pkg probe
    while read -r pkg probe _; do
        [[ -z "$pkg" || "$pkg" == \#* ]] && continue
        if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
    done <"$ROOT/qemu/ndctl-build-deps.txt"
    ((${#missing[@]} == 0)) || fail 6 "missing ndctl build dependencies; run: apt-get install -y --no-install-recommends ${missing[*]}"
}

src_version() { sed -n "s/^ *version *: *'\([0-9.]*\)'.*/\1/p" "$1/meson.build" 2>/dev/null | head -n1; }

# Debian's source package through a private apt state (the host's sources are not touched).
fetch_ndctl_source() {
    local apt="$NDIR/apt" tmp
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -q)
    tmp="$(mktemp -d "$NDIR/.tmp-src.XXXXXX")"
    say "fetching Debian's ndctl $NDCTL_VERSION source package from sid (private apt state in $apt)"
    if apt-get "${opts[@]}" update >&2 && (cd "$tmp" && apt-get "${opts[@]}" source --download-only "ndctl=$NDCTL_VERSION-1" >&2) &&
        dpkg-source -x "$tmp"/ndctl_*.dsc "$tmp/src" >&2; then
        echo "Debian source package ndctl $NDCTL_VERSION-1 (apt-get source, dpkg-source -x)" >"$tmp/src/.daxmode-origin"
        mv "$tmp/src" "$NDIR/src"
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    return 1
}

ndctl_source() {
    mkdir -p "$NDIR"
    if [[ -n "$NDCTL_SRC" ]]; then
        [[ "$(src_version "$NDCTL_SRC")" == "$NDCTL_VERSION" ]] ||
            fail 5 "NDCTL_SRC=$NDCTL_SRC is not ndctl $NDCTL_VERSION (meson.build says '$(src_version "$NDCTL_SRC")')"
        if [[ ! -f "$NDIR/src/meson.build" ]]; then
            cp -a "$NDCTL_SRC/." "$NDIR/src.new"
            rm -rf "$NDIR/src.new/.git"
            echo "NDCTL_SRC=$NDCTL_SRC" >"$NDIR/src.new/.daxmode-origin"
            mv "$NDIR/src.new" "$NDIR/src"
        fi
    fi
    [[ -f "$NDIR/src/meson.build" ]] || fetch_ndctl_source ||
        fail 5 "no ndctl $NDCTL_VERSION source: 'apt-get source ndctl=$NDCTL_VERSION-1' failed (some mirrors serve no
  source packages). Pass a tree of ndctl's v$NDCTL_VERSION tag instead, e.g.
    git clone -b v$NDCTL_VERSION https://git.kernel.org/pub/scm/utils/kernel/ndctl/ndctl.git /tmp/ndctl
    make ndctl-test NDCTL_SRC=/tmp/ndctl
  (it is copied to $NDIR/src; docs/kernel.md, 'ndctl's test suites')"
    [[ "$(src_version "$NDIR/src")" == "$NDCTL_VERSION" ]] ||
        fail 5 "$NDIR/src is not ndctl $NDCTL_VERSION; remove it and run again"
}

ndctl_build() {
    local b="$NDIR/build"
    if [[ -x "$b/daxctl/daxctl" && "$("$b/daxctl/daxctl" --version 2>/dev/null)" == "$NDCTL_VERSION" &&
        -x "$b/test/dax-dev" ]]; then
        say "ndctl $NDCTL_VERSION with tests already built in $b"
        return 0
    fi
    check_deps
    rm -rf "$b"
    say "building ndctl $NDCTL_VERSION with its tests into $b (log: $NDIR/build.log)"
    # version-tag: the source is not a git checkout, so meson cannot ask git for the version.
    if ! { nice -n 10 meson setup "$b" "$NDIR/src" -Dtest=enabled -Ddestructive=enabled -Ddocs=disabled \
        -Dsystemd=disabled -Dversion-tag="$NDCTL_VERSION" -Diniparserdir=iniparser &&
        nice -n 10 ninja -C "$b"; } >"$NDIR/build.log" 2>&1; then
        tail -n 20 "$NDIR/build.log" | sed 's/^/  | /' >&2
        fail 6 "building ndctl $NDCTL_VERSION failed (full log: $NDIR/build.log)"
    fi
}

# --- the kernel and its unit-test modules --------------------------------------------------------
kernel_build() { # sets BZIMAGE, MODDIR, LABEL, KIND (and STOCK, RELEASE for KERNEL=debian)
    local args=() line
    if [[ "$KERNEL" == debian ]]; then
        # The harness's default kernel (make setup); no --kernel/--modules.
        BZIMAGE="" MODDIR="" STOCK=1 KIND=debian-stock RELEASE=7.3.4+deb13-amd64
        LABEL="Debian's packaged kernel, no unit-test modules"
        return 0
    fi
    if [[ -n "$KERNEL" ]]; then
        if [[ -d "$KERNEL" ]]; then
            BZIMAGE="$KERNEL/bzImage" MODDIR="$KERNEL"
        elif [[ ! -e "$KERNEL" ]]; then
            fail 2 "KERNEL=$KERNEL does not exist (a build-kernel.sh product directory, a bzImage, or 'debian')"
        else
            [[ -n "$MODULES" ]] || fail 2 "KERNEL=$KERNEL is a file: give MODULES=<its module tree> too"
            BZIMAGE="$KERNEL" MODDIR="$MODULES"
        fi
        [[ -f "$BZIMAGE" ]] || fail 2 "no kernel image at $BZIMAGE"
        KIND="${FAMFS:+famfs-$FAMFS}" LABEL="$BZIMAGE"
        KIND="${KIND:-debian-7.3}"
        if [[ -n "$UNIT_MODULES" ]]; then
            STOCK=1 KIND="$KIND-stock" LABEL="$BZIMAGE, no unit-test modules"
            RELEASE="$(sed -n 's/^release=//p' "$MODDIR/build-info" 2>/dev/null)"
            [[ -n "$RELEASE" ]] || RELEASE="$(basename "$(find "$MODDIR/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")"
        fi
        return 0
    fi
    [[ -n "$KSRC" ]] || KSRC="$(bash "$ROOT/qemu/kernel-test.sh" --fetch-only CACHE="$CACHE")"
    args=(KSRC="$KSRC" KCONFIG="$ROOT/qemu/ndctl-test.config" CACHE="$CACHE")
    case "$FAMFS" in
    v10)
        args+=(PATCHES="$CACHE/famfs-v10/famfs-v10.mbox" ADAPT="$ROOT/qemu/patches/famfs-7.3")
        [[ -f "$CACHE/famfs-v10/famfs-v10.mbox" ]] ||
            fail 5 "no famfs V10 series at $CACHE/famfs-v10/famfs-v10.mbox (docs/kernel.md says how to get it)"
        KIND=famfs-v10 LABEL="linux-source-7.3 + famfs V10 + qemu/ndctl-test.config"
        ;;
    v1) KIND=famfs-v1 LABEL="$KSRC (famfs v1) + qemu/ndctl-test.config" ;;
    *) KIND=debian-7.3 LABEL="Debian linux-source-7.3 + qemu/ndctl-test.config" ;;
    esac
    say "building the kernel and its unit-test modules (qemu/build-kernel.sh; cached when built before)"
    line="$(TEST_MODULES="$TEST_MODULE_DIRS" bash "$ROOT/qemu/build-kernel.sh" "${args[@]}")" || exit $?
    read -r _ BZIMAGE _ MODDIR <<<"$line"
}

test_modules_present() {
    local rel
    rel="$(sed -n 's/^release=//p' "$MODDIR/build-info" 2>/dev/null)" ||
        rel="$(basename "$(find "$MODDIR/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")"
    [[ -n "$rel" ]] || fail 7 "no lib/modules/<release> under $MODDIR"
    local m
    for m in nfit_test cxl_test nfit cxl_core; do
        [[ -n "$(find "$MODDIR/lib/modules/$rel/updates" -name "$m.ko*" 2>/dev/null | head -n1)" ]] ||
            fail 7 "$MODDIR has no $m module under lib/modules/$rel/updates: build the kernel with TEST_MODULES=\"$TEST_MODULE_DIRS\" (qemu/build-kernel.sh)"
    done
    RELEASE="$rel"
}

STOCK=0
ndctl_source
ndctl_build
kernel_build
((STOCK)) || test_modules_present
LABEL="$RELEASE ($LABEL)"
SKIPS="${SKIPS:-$ROOT/qemu/ndctl-skips/$KIND.skips}"
[[ -f "$SKIPS" ]] || fail 2 "no declared-skips file $SKIPS"

known="$(meson test -C "$NDIR/build" --list --no-rebuild 2>/dev/null | sed -n 's#^.* / ##p')"
if [[ -z "$TESTS" ]]; then
    TESTS="$DAX_TESTS $(meson test -C "$NDIR/build" --list --no-rebuild --suite cxl 2>/dev/null | sed -n 's#^.* / ##p' | tr '\n' ' ')"
fi
for t in $TESTS; do grep -qxF "$t" <<<"$known" || fail 2 "ndctl $NDCTL_VERSION has no test '$t'"; done
# Tests the skips file says this kernel cannot run at all are not started (ndctl_verdict.py lists them).
not_run="$(awk '!/^ *#/ && $2 == "!not-run" {print $1}' "$SKIPS")"
run=()
for t in $TESTS; do grep -qxF "$t" <<<"$not_run" || run+=("$t"); done
((${#run[@]})) || fail 2 "$SKIPS declares every requested test not-run: nothing to boot for"

res="$ROOT/results/ndctl-test/$KIND"
rm -rf "$res"
mkdir -p "$res"
say "kernel $LABEL${BZIMAGE:+: $BZIMAGE, modules $MODDIR}"
say "tests run: ${run[*]}${not_run:+; declared not to run: $(echo $not_run)}"
boot=()
[[ -z "$VM_LOCK" ]] || boot=(flock "$VM_LOCK")
# 6G region (+128K labels): the dax tests' 4 GiB namespace with room for 2 GiB hotplug alignment.
boot+=(bash "$ROOT/qemu/cxl-mhd.sh" --backend nvdimm --hosts 1 --shared-size 6G --nvdimm-label-size 128K
    --no-second-nvdimm --mem 2G --timeout 10800 --results "$res")
[[ -z "$BZIMAGE" ]] || boot+=(--kernel "$BZIMAGE" --modules "$MODDIR")
guest=(bash "$ROOT/qemu/ndctl-guest.sh")
((STOCK == 0)) || guest+=(--stock-modules)
boot+=(--cmd "${guest[*]} $NDIR/build ${run[*]}")
rc=0
"${boot[@]}" || rc=$?
# Judge whatever ran, even after a harness failure: the table says how far it got.
vrc=0
python3 "$ROOT/qemu/ndctl_verdict.py" --skips "$SKIPS" --kernel "$LABEL" --expect $TESTS --known $known -- "$res" ||
    vrc=$?
((rc == 0)) || fail "$rc" "the harness failed (rc $rc; logs in $res)"
((vrc == 0)) || fail 1 "ndctl's tests on $RELEASE: failures or undeclared skips (table above; $res/ndctl-summary.md)"
say "ndctl $NDCTL_VERSION tests on $RELEASE: only passes and declared skips ($res/ndctl-summary.md)"
exit 0
}
