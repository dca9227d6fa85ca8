#!/bin/busybox sh
# /init of the harness's initramfs (busybox only).  It mounts the host's root read-only over 9p,
# gives the guest its own writable tmpfs where programs need one, mounts the guest kernel's module
# tree and the per-host results share, then switches to that root and runs stage2.sh (udevd, the
# guest agent).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "mhd-init: $*" >/dev/console; }
# Boot marks (guest uptime at each step) for the harness's timing table; copied to the share later.
mark() { echo "$1 $(cut -d' ' -f1 /proc/uptime)" >>/mhd/boot.times; }
mark init
fail() {
    say "FATAL: $*"
    # isa-debug-exit: QEMU exits with (rc << 1) | 1, so the host sees 2*100+1 = 201.
    printf '\144' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    poweroff -f
}

for m in $(cat /mhd/modules.order); do
    insmod "/mhd/modules/$m" || fail "insmod $m"
done

if grep -q 'mhd_probe=1' /proc/cmdline; then
    # KVM/boot probe: userspace reached; stop here.
    say "MHD-PROBE-OK"
    poweroff -f
fi

R=/newroot
mkdir -p $R /lower /rw
# cache=loose: the root is read-only and the project's files do not change under a test run; with
# cache=none every stat() of a Python import is a 9p round trip, which under TCG costs seconds.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower || fail "mount hostroot"
# The guest's root is an overlay: the host's root (read-only, never changed) under a per-guest tmpfs.
# Writes (tool state, /usr/lib/modules/<guest kernel>, which a container host may not even have a
# mount point for) stay inside this guest.
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay $R || fail "overlay root"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t configfs configfs $R/sys/kernel/config 2>/dev/null
mount -t fusectl fusectl $R/sys/fs/fuse/connections 2>/dev/null

KVER=$(uname -r)
mkdir -p "$R/usr/lib/modules/$KVER" || fail "mkdir /usr/lib/modules/$KVER"
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose modules "$R/usr/lib/modules/$KVER" \
    || fail "mount modules"

mkdir -p /share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /share || fail "mount share"
[ -f /share/guest.env ] || fail "no guest.env in the share"
. /share/guest.env
cat /mhd/boot.times >>/share/boot.times
# The overlay already keeps every write inside this guest (e.g. famfs's /opt/famfs/system_uuid, which
# must differ per host); /tmp, /run and /var/tmp start empty as on a fresh boot -- unless the project
# itself lives there (a CI clone under /tmp), which must stay visible.
for d in tmp run var/tmp; do
    case "$MHD_PROJECT/" in "/$d/"*) continue ;; esac
    [ -d "$R/$d" ] && mount -t tmpfs -o mode=0755 tmpfs "$R/$d"
done
chmod 1777 $R/tmp $R/var/tmp
mkdir -p $R/run/mhd/share $R/run/mhd/hostroot
mount --move /share $R/run/mhd/share || fail "move share"
# The host's root as the guest's lower layer sees it, read-only, so tests can prove that none of
# the host's own state (below) reaches this guest.
mount --bind /lower $R/run/mhd/hostroot || fail "bind hostroot"

# This guest's own identity, whatever the host holds (mhd/host/identity.py): host-specific files
# are removed on the overlay (whiteouts; the host is untouched), then this guest's are written.
for p in $MHD_MASK; do
    rm -rf "$R$p"
done
echo "$MHD_MACHINE_ID" >$R/etc/machine-id
echo "$MHD_HOSTNAME" >$R/etc/hostname
mkdir -p -m 0755 $R/opt/famfs $R/etc/udev/rules.d
printf '%s\000' "$MHD_SYSTEM_UUID" >$R/opt/famfs/system_uuid && chmod 0444 $R/opt/famfs/system_uuid
hostname "$MHD_HOSTNAME"
echo "$MHD_HOST" >$R/run/mhd/host
ip link set lo up 2>/dev/null

[ -f "$R$MHD_STAGE2" ] || fail "no stage 2 script $MHD_STAGE2 on the host root"
# switch_root, not chroot: udevadm and systemd tools refuse to act "in a chroot" (they compare / with
# /proc/1/root), and the guest should look like a normally booted system to the code under test.
exec switch_root $R /bin/sh "$MHD_STAGE2"
