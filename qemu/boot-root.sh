#!/bin/bash
# The boot test's Debian root, built once into .cache/bootroot/<suite>-<kernel>/: debootstrap minbase
# + systemd, udev, kmod, ndctl, initramfs-tools and daxmode's dependencies from the archive, the guest
# kernel's modules (Debian's 7.3.4 from `make setup`) and an initramfs made by initramfs-tools for it.
# The daxmode package is NOT in it: qemu/boot-test.sh installs the current .deb into a copy per run.
#   boot-root.sh CACHE KVER     prints the root directory
set -euo pipefail
CACHE=$1
KVER=$2
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PKGS=systemd,systemd-sysv,udev,kmod,ndctl,initramfs-tools,zstd,procps,e2fsprogs,python3,python3-click,python3-pyudev
log() { echo "boot-root: $*" >&2; }
die() { echo "boot-root: $*" >&2; exit 1; }

mods=$CACHE/kernels/$KVER/usr/lib/modules/$KVER
[[ -f $mods/vmlinuz && -f $mods/modules.dep ]] || die "no kernel $KVER in $CACHE/kernels (run make setup)"
dest=$CACHE/bootroot/$SUITE-$KVER
if [[ -f $dest/.complete ]]; then
    echo "$dest/root"
    exit 0
fi
command -v debootstrap >/dev/null || {
    [[ $(id -u) -eq 0 ]] || die "debootstrap is missing (apt-get install debootstrap)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
}
root=$dest/root
if [[ ! -f $dest/.debootstrapped ]]; then
    rm -rf "$dest"
    mkdir -p "$dest"
    log "debootstrap $SUITE (minbase + $PKGS) into $root"
    debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$root" "$MIRROR" >"$dest/debootstrap.log" 2>&1 ||
        { tail -20 "$dest/debootstrap.log" >&2; die "debootstrap failed (log: $dest/debootstrap.log)"; }
    touch "$dest/.debootstrapped"
fi

log "kernel modules $KVER and an initramfs for them"
mkdir -p "$root/usr/lib/modules" "$root/boot"
rm -rf "${root:?}/usr/lib/modules/$KVER"
cp -a "$mods" "$root/usr/lib/modules/"
# mkinitramfs reads the kernel's config only to learn which initramfs compressions it unpacks; the
# module tree from `make setup` has no config file, and Debian's kernels unpack both of these.
printf 'CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n' >"$root/boot/config-$KVER"
cp "$mods/vmlinuz" "$dest/vmlinuz"
echo "MODULES=dep" >"$root/etc/initramfs-tools/conf.d/boot-test"
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
# MODULES=dep looks at the build host's devices; the guest's root is virtio-blk ext4, listed above.
sed -i 's/^MODULES=dep/MODULES=list/' "$root/etc/initramfs-tools/conf.d/boot-test"
mount --bind /proc "$root/proc"
mount --bind /sys "$root/sys"
mount --bind /dev "$root/dev"
trap 'umount "$root/dev" "$root/sys" "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" depmod -a "$KVER"
chroot "$root" update-initramfs -c -k "$KVER" >"$dest/initramfs.log" 2>&1 ||
    { tail -20 "$dest/initramfs.log" >&2; die "update-initramfs failed"; }
cp "$root/boot/initrd.img-$KVER" "$dest/initrd.img"

log "configuring: hostname, fstab, console, no root password, persistent journal"
echo daxmode-boot >"$root/etc/hostname"
cat >"$root/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,relatime 0 1
share /mnt/share 9p trans=virtio,version=9p2000.L,msize=512000,nofail 0 0
FSTAB
mkdir -p "$root/mnt/share" "$root/var/log/journal"
chroot "$root" passwd -d root >/dev/null
chroot "$root" systemctl mask getty@tty1.service >/dev/null 2>&1 || true
touch "$dest/.complete"
echo "$root"
