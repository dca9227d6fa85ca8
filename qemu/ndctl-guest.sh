#!/usr/bin/env bash
# In a guest booted by qemu/ndctl-test.sh: run ndctl's own tests (meson test, so each script gets
# the environment test/meson.build gives it: NDCTL, DAXCTL, CXL, TEST_PATH, DATA_PATH) and leave
# meson's per-test log where the host reads it. The host judges; this only runs and collects.
#
#   ndctl-guest.sh [--stock-modules] <ndctl meson build dir> <test name>...
#
# Before any test it checks that the unit-test modules replace the in-tree ones (modinfo resolves
# each to lib/modules/<release>/updates/): ndctl's tests would otherwise run against the production
# drivers, or fail to find nfit_test/cxl_test, and the run would not test what it claims.
# --stock-modules (a kernel no unit-test modules can be built for) only records where they resolve.
# Writes to $DAXMODE_VM_SHARE (default /run/mhd/share): modules.txt, prepare.txt, ndctl-test.json
# (meson's JSON-lines test log), ndctl-test.txt, meson.out, dmesg-<test>.txt (the kernel's lines
# during that test), dmesg.txt.
# Exit: 0 the tests ran (their verdicts are in ndctl-test.json); 2 usage; 3 the test modules are
# not in place; 4 meson produced no test log; 5 the ACPI.NFIT bus could not be emptied.
set -uo pipefail

say() { printf 'ndctl-guest: %s\n' "$*"; }
stock=0
[[ "${1:-}" != --stock-modules ]] || {
    stock=1
    shift
}
[[ $# -ge 2 && -f "$1/build.ninja" ]] || {
    echo "usage: ndctl-guest.sh <ndctl meson build dir> <test name>..." >&2
    exit 2
}
build="$1"
shift
share="${DAXMODE_VM_SHARE:-/run/mhd/share}"
mkdir -p "$share"

# The modules ndctl's dax and cxl tests load, each of which must be the tools/testing build.
test_modules=(nfit_test nfit_test_iomap cxl_test cxl_mock cxl_mock_mem nfit libnvdimm nd_pmem
    device_dax dax_pmem cxl_core cxl_acpi cxl_port cxl_mem cxl_pmem dax_hmem)
bad=0
: >"$share/modules.txt"
for m in "${test_modules[@]}"; do
    path="$(modinfo -n "$m" 2>/dev/null)" || path="(not found)"
    printf '%s %s\n' "$m" "$path" >>"$share/modules.txt"
    [[ "$path" == */lib/modules/"$(uname -r)"/updates/* ]] || {
        ((stock)) || say "module $m resolves to $path, not to the unit-test build under updates/"
        bad=1
    }
done
if ((stock)); then
    say "kernel $(uname -r) without unit-test modules, as asked (where each resolves: modules.txt)"
else
    ((bad == 0)) || exit 3
    say "kernel $(uname -r); ${#test_modules[@]} unit-test modules under updates/ (modules.txt)"
fi

# The ACPI.NFIT bus as ndctl's dax tests expect it: daxctl-devices.sh takes the first namespace that
# `ndctl list -b ACPI.NFIT -Ni` shows and recreates it as 4 GiB devdax, so the region must have the
# room: drop the namespace the harness's bring-up wrote over the whole region (the labelled region
# then offers one idle seed namespace and all its capacity, as a fresh labelled nvdimm does).
"$build/ndctl/ndctl" destroy-namespace -f -b ACPI.NFIT all >"$share/prepare.txt" 2>&1 || {
    say "could not empty the ACPI.NFIT bus for the tests:"
    cat "$share/prepare.txt"
    exit 5
}
"$build/ndctl/ndctl" list -b ACPI.NFIT -RNi >>"$share/prepare.txt" 2>&1 || true
say "ACPI.NFIT emptied for the tests (prepare.txt)"

# One meson run per test, so each test's kernel log can be told apart: ndctl's check_dmesg reads
# `journalctl -k`, and this guest has no journal ("No journal files were found."), so that check
# finds nothing here; ndctl_verdict.py applies it to dmesg-<test>.txt instead. Timeouts:
# test/meson.build gives each test 600 s on real hardware; TCG is several times slower.
mult="${NDCTL_TIMEOUT_MULT:-3}"
: >"$share/ndctl-test.json"
: >"$share/ndctl-test.txt"
: >"$share/meson.out"
for t in "$@"; do
    start="$(cut -d' ' -f1 /proc/uptime)"
    say "meson test $t"
    rm -f "$build/meson-logs/one.json" "$build/meson-logs/one.txt"
    meson test -C "$build" --no-rebuild --num-processes 1 --timeout-multiplier "$mult" \
        --logbase one "$t" >>"$share/meson.out" 2>&1
    cat "$build/meson-logs/one.txt" >>"$share/ndctl-test.txt" 2>/dev/null || true
    cat "$build/meson-logs/one.json" >>"$share/ndctl-test.json" 2>/dev/null ||
        say "meson wrote no test log for $t (see meson.out)"
    # The kernel lines stamped since the test began ([   12.345678] ...).
    dmesg 2>/dev/null | awk -v t0="$start" '{ s = $0; sub(/^\[ */, "", s); if (s + 0 >= t0) print }' \
        >"$share/dmesg-$t.txt"
    grep -E "^ *[0-9]+/[0-9]+ .*$t" "$share/meson.out" | tail -n1 || true
done
dmesg >"$share/dmesg.txt" 2>&1 || true
[[ -s "$share/ndctl-test.json" ]] || {
    say "meson wrote no test log at all (see meson.out)"
    tail -n 20 "$share/meson.out"
    exit 4
}
exit 0
