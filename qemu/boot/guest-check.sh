#!/bin/bash
# Runs INSIDE the boot-test guest (systemd as PID 1), started by boot-check.service once per boot;
# the phase comes from the kernel command line (boottest.phase=N), set by qemu/boot-test.sh.
#   1: write devdax namespaces on both nvdimms, format famfs on dax1.0, install the configuration
#   2, 3: the configured state, read from sysfs and mountinfo; 3: also boot 2's shutdown
#   (boot 3's own shutdown is read from the disk image by qemu/boot-test.sh)
# Every result is a line "ok: ..." or "FAIL: ..." in /mnt/share/phaseN.txt; the phase ends with a
# reboot or poweroff, which ends this QEMU run (-no-reboot).
set -u
phase=$(sed -n 's/.*boottest\.phase=\([0-9]*\).*/\1/p' /proc/cmdline)
out=/mnt/share/phase$phase.txt
: >"$out"
ok() { echo "ok: $*" >>"$out"; }
fail() { echo "FAIL: $*" >>"$out"; }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@" >>/mnt/share/phase$phase.log 2>&1; then ok "$what"; else fail "$what"; fi
}
finish() {
    echo "done: $1" >>"$out"
    sync
    systemctl "$1"
}
MNT=/mnt/famfs
CONF=/etc/daxmode.d/50-boot-test.toml

# The boot is over when systemd says so (running or degraded); then nothing is still starting.
state=$(timeout 300 systemctl is-system-running --wait 2>/dev/null)
echo "system state: $state" >>"$out"

if [[ $phase == 1 ]]; then
    check "daxmode installed from the package at /usr/bin/daxmode" test "$(command -v daxmode)" = /usr/bin/daxmode
    check "the package's unit runs /usr/bin/daxmode" grep -qx 'ExecStart=/usr/bin/daxmode apply --udev %I' \
        /lib/systemd/system/daxmode-apply@.service
    # udev loads nfit for the ACPI0012 device during coldplug; wait for both raw namespaces
    check "nvdimm namespaces present" timeout 120 sh -c \
        'until [ -e /sys/bus/nd/devices/namespace0.0 ] && [ -e /sys/bus/nd/devices/namespace1.0 ]; do sleep 1; done'
    udevadm settle
    for r in 0 1; do
        check "devdax namespace on region$r" ndctl create-namespace -f -e "namespace$r.0" -m devdax -M mem -a 2M
    done
    for d in dax0.0 dax1.0; do
        check "$d appeared" timeout 60 sh -c "until [ -e /sys/bus/dax/devices/$d ]; do sleep 0.5; done"
    done
    udevadm settle
    # the new devices' daxmode-apply@ units run now, before there is a configuration ("no rule")
    check "daxmode-apply@ units done" timeout 120 sh -c 'while [ -n "$(systemctl list-jobs --no-legend)" ]; do sleep 0.5; done'
    check "famfs mkfs on dax1.0" daxmode famfs mkfs dax1.0
    head -c 3000000 /dev/urandom >/root/data.bin
    sha256sum </root/data.bin | cut -d' ' -f1 >/mnt/share/data.sha256
    check "famfs cp into dax1.0" daxmode famfs cp dax1.0 /root/data.bin /data.bin
    mkdir -p /etc/daxmode.d
    cat >"$CONF" <<'CONF'
# the boot test: the first nvdimm's memory as System RAM, the second a famfs volume mounted at boot
[[device]]
match = { namespace = "namespace0.0" }
mode = "system-ram"

[[device]]
match = { namespace = "namespace1.0" }
mode = "fsdev"
mount = "/mnt/famfs"
CONF
    check "the configuration parses" daxmode apply --dry-run
    finish reboot
    exit 0
fi

blocks_of() { # the memory block numbers in dax device $1's ranges, from sysfs
    local dev=/sys/bus/dax/devices/$1 bs m start end
    bs=$((16#$(cat /sys/devices/system/memory/block_size_bytes)))
    if ! ls -d "$dev"/mapping[0-9]* >/dev/null 2>&1; then # one range: resource and size
        start=$(($(cat "$dev/resource")))
        end=$((start + $(cat "$dev/size") - 1))
        seq $(((start + bs - 1) / bs)) $(((end + 1) / bs - 1))
        return
    fi
    for m in "$dev"/mapping[0-9]*; do
        start=$(($(cat "$m/start"))); end=$(($(cat "$m/end")))
        seq $(((start + bs - 1) / bs)) $(((end + 1) / bs - 1))
    done
}
system_ram_online() {
    [[ $(basename "$(readlink /sys/bus/dax/devices/dax0.0/driver)") == kmem ]] || return 1
    local b n=0
    for b in $(blocks_of dax0.0); do
        [[ $(cat /sys/devices/system/memory/memory$b/state) == online ]] || return 1
        grep -q Movable /sys/devices/system/memory/memory$b/valid_zones || return 1
        n=$((n + 1))
    done
    echo "dax0.0: kmem, $n blocks online, movable"
    ((n > 0))
}
famfs_mounted() {
    # mountinfo: mount point (5th field) and, after " - ", fstype and source
    awk -v m="$MNT" '$5 == m { for (i = 6; $i != "-"; i++); print $(i+1), $(i+2) }' /proc/self/mountinfo |
        grep -qx "fuse.famfs /dev/dax1.0"
}
famfs_data() {
    [[ $(sha256sum <"$MNT/data.bin" | cut -d' ' -f1) == "$(cat /mnt/share/data.sha256)" ]]
}
previous_shutdown_clean() {
    local j
    j=$(journalctl -b -1 -o cat --no-pager) || return 1
    # the famfs unit was stopped, its mount went with it, and nothing failed on the way down
    journalctl -b -1 -u daxmode-famfs@dax1.0.service -o cat --no-pager | grep -q "Stopped\|Deactivated" || return 1
    ! grep -E "Failed to unmount|Failed with result|failed with result|entered failed state" <<<"$j"
}

settled() {
    # udev's dax events start daxmode-apply@ units, apply starts daxmode-famfs@ (--no-block): wait
    # until no job is queued and the famfs unit has come up (or failed), then for systemd again
    local i
    for i in $(seq 240); do
        if [[ -z $(systemctl list-jobs --no-legend) ]] && {
            systemctl is-active --quiet daxmode-famfs@dax1.0.service ||
                systemctl is-failed --quiet daxmode-famfs@dax1.0.service
        }; then
            echo "settled after ${i}x0.5 s"
            return 0
        fi
        sleep 0.5
    done
    return 1
}

if [[ $phase == 2 || $phase == 3 ]]; then
    check "daxmode's units settled (no jobs left; famfs unit up or failed)" settled
    state=$(systemctl is-system-running)
    check "systemd: running, not degraded ($state)" test "$state" = running
    check "systemctl --failed: none" test -z "$(systemctl --failed --no-legend --plain)"
    check "dax0.0 is System RAM, every block online and movable (sysfs)" system_ram_online
    check "daxmode-famfs@dax1.0.service active" systemctl is-active --quiet daxmode-famfs@dax1.0.service
    check "famfs on dax1.0 mounted at $MNT (mountinfo)" famfs_mounted
    check "the file written in phase 1 reads back through the mount" famfs_data
    check "daxmode apply: every device as configured" daxmode apply
fi
if [[ $phase == 3 ]]; then
    check "the previous boot shut down cleanly (journal: famfs unit stopped, nothing failed)" previous_shutdown_clean
fi
case $phase in
2) finish reboot ;;
*) finish poweroff ;;
esac
