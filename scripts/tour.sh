#!/bin/bash
# The README's tour: what a user does and sees on a real kernel.  Run it in a harness guest:
#   bash qemu/cxl-mhd.sh --backend nvdimm --hosts 1 --cmd "bash $PWD/scripts/tour.sh"
set -u
D=dax0.0
run() { echo "\$ $*"; "$@" 2>&1; rc=$?; [ $rc -ne 0 ] && echo "(exit $rc)"; return 0; }
# The kernel's own view, read from sysfs without daxmode: the bound driver and the memory blocks
# in the device's range (resource/size against block_size_bytes).
kernel_view() {
    local dev=/sys/bus/dax/devices/$D r s bs i b
    echo "\$ # sysfs: driver of $D, memory blocks in its range"
    echo "driver: $(basename "$(readlink $dev/driver)")"
    r=$(( $(cat $dev/resource) )); s=$(cat $dev/size); bs=$(( 0x$(cat /sys/devices/system/memory/block_size_bytes) ))
    local n=0
    for (( i = r / bs; i < (r + s) / bs; i++ )); do
        b=/sys/devices/system/memory/memory$i
        [ -e $b ] && { echo "memory$i: $(cat $b/state) ($(cat $b/valid_zones))"; n=$((n + 1)); }
    done
    [ $n -eq 0 ] && echo "no memory blocks in its range (none hot-plugged)"
    return 0
}
cd /tmp
echo "== $(uname -r), backend ${DAXMODE_VM_BACKEND:-?}"
run daxmode list
echo online > /sys/devices/system/memory/auto_online_blocks
run daxmode set $D system-ram --dry-run
run daxmode set $D system-ram
run daxmode list $D
kernel_view
run daxmode set $D fsdev
run daxmode set $D fsdev --force --json
kernel_view
run daxmode set $D devdax
run daxmode set ../devices/$D devdax
echo offline > /sys/devices/system/memory/auto_online_blocks
# famfs: format, populate, mount, read back through the mount
head -c 5000000 /dev/urandom > /tmp/data.bin
run daxmode famfs mkfs $D --force
run daxmode famfs mkdir $D shared
run daxmode famfs cp $D /tmp/data.bin shared/data.bin
mkdir -p /mnt/famfs
run daxmode famfs mount $D /mnt/famfs
run ls -l /mnt/famfs/shared
echo "\$ grep fuse.famfs /proc/self/mountinfo"; grep fuse.famfs /proc/self/mountinfo
echo "\$ sha256sum /tmp/data.bin /mnt/famfs/shared/data.bin"; sha256sum /tmp/data.bin /mnt/famfs/shared/data.bin
run rm /mnt/famfs/shared/data.bin
run daxmode set $D fsdev
run daxmode famfs status
run daxmode famfs umount /mnt/famfs
run daxmode list $D
kernel_view
echo "\$ grep -c fuse.famfs /proc/self/mountinfo"; grep -c fuse.famfs /proc/self/mountinfo || true
