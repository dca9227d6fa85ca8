#!/bin/bash
# make boot-test: daxmode's boot path under a real init.  A Debian guest whose PID 1 is systemd
# (root: qemu/boot-root.sh, built once into .cache/bootroot), with the .deb of this checkout
# installed by apt, boots on Debian's 7.3.4 kernel with two nvdimm-backed dax devices and
# memhp_default_state=offline.  Boot 1 writes the namespaces, formats famfs on dax1.0 and installs a
# configuration (system-ram for dax0.0; fsdev with mount = "/mnt/famfs" for dax1.0); boots 2 and 3
# check the configured state from sysfs and mountinfo (and systemctl --failed); boot 3 checks boot 2's
# shutdown in the journal, and this script checks boot 3's from the disk image afterwards.  Each guest reboot ends its QEMU run (-no-reboot), so
# every boot is a fresh QEMU on the same disk and nvdimm files.  qemu/boot/guest-check.sh does the
# guest side; results land in RESULTS/phaseN.txt.
#   RESULTS=dir (results/boot-test)  CACHE=dir (.cache)  KVER=...  DEB=file (default: built now)
#   ACCEL=tcg|kvm (tcg)  VM_LOCK=file (flock around each QEMU run)  TIMEOUT=s per boot (600)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CACHE:-$ROOT/.cache}
KVER=${KVER:-7.3.4+deb13-amd64}
RESULTS=${RESULTS:-$ROOT/results/boot-test}
ACCEL=${ACCEL:-tcg}
TIMEOUT=${TIMEOUT:-600}
QEMU=${QEMU:-qemu-system-x86_64}
log() { echo "boot-test: $*" >&2; }
die() { echo "boot-test: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, loop-free mkfs.ext4 -d)"
t0=$(date +%s)

base=$(bash "$ROOT/qemu/boot-root.sh" "$CACHE" "$KVER")
bootdir=$(dirname "$base")
rm -rf "$RESULTS"
mkdir -p "$RESULTS/share"
if [[ -z ${DEB:-} ]]; then
    DEB=$(OUT=$RESULTS bash "$ROOT/scripts/deb.sh")
fi
[[ -f $DEB ]] || die "no package $DEB"
log "package $(basename "$DEB"); guest root from $base"

root=$RESULTS/root
cp -a "$base" "$root"
cp "$DEB" "$root/tmp/"
for d in proc sys dev; do mount --bind "/$d" "$root/$d"; done
trap 'for d in dev sys proc; do umount "$root/$d" 2>/dev/null || true; done' EXIT
log "apt install ./$(basename "$DEB") in the guest root"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/tmp/$(basename "$DEB")" \
    >"$RESULTS/apt-install.log" 2>&1 || { tail -20 "$RESULTS/apt-install.log" >&2; die "apt install failed"; }
for d in dev sys proc; do umount "$root/$d"; done
trap - EXIT
rm "$root/tmp/$(basename "$DEB")"
install -m 0755 "$ROOT/qemu/boot/guest-check.sh" "$root/usr/local/sbin/boot-check"
install -m 0644 "$ROOT/qemu/boot/boot-check.service" "$root/etc/systemd/system/boot-check.service"
ln -sf /etc/systemd/system/boot-check.service "$root/etc/systemd/system/multi-user.target.wants/boot-check.service"
# ndctl (in the root only for the test's namespaces) ships a monitor that exits "no dimms to monitor"
# and so fails the boot's "systemctl --failed" check; it is not part of what is tested
ln -sf /dev/null "$root/etc/systemd/system/ndctl-monitor.service"
log "root disk image"
truncate -s 3G "$RESULTS/root.img"
mkfs.ext4 -q -F -L root -d "$root" "$RESULTS/root.img"
rm -rf "$root"
truncate -s 1G "$RESULTS/nvdimm0.img"
truncate -s 512M "$RESULTS/nvdimm1.img"
t_ready=$(date +%s)

boot() { # boot PHASE: one QEMU run, until the guest powers off or reboots
    local phase=$1 started rc=0
    started=$(date +%s)
    local cmd=("$QEMU" -name daxmode-boot -nodefaults -no-user-config -display none -accel "$ACCEL" -cpu max -smp 2
        -machine q35,nvdimm=on -m 1024M,slots=3,maxmem=4G
        -object "memory-backend-file,id=nv0,share=on,mem-path=$RESULTS/nvdimm0.img,size=1G"
        -device nvdimm,id=nvdimm0,memdev=nv0
        -object "memory-backend-file,id=nv1,share=on,mem-path=$RESULTS/nvdimm1.img,size=512M"
        -device nvdimm,id=nvdimm1,memdev=nv1
        -drive "file=$RESULTS/root.img,if=virtio,format=raw"
        -virtfs "local,path=$RESULTS/share,mount_tag=share,security_model=none,id=share"
        -kernel "$bootdir/vmlinuz" -initrd "$bootdir/initrd.img"
        -append "root=/dev/vda rw console=ttyS0,115200 memhp_default_state=offline panic=-1 loglevel=4 boottest.phase=$phase"
        -serial "file:$RESULTS/console-$phase.log" -no-reboot)
    timeout "$TIMEOUT" "${cmd[@]}" || rc=$?
    echo "boot $phase: $(($(date +%s) - started)) s, qemu exit $rc" >>"$RESULTS/timings.txt"
    [[ -f $RESULTS/share/phase$phase.txt ]] || die "boot $phase wrote no results (console: $RESULTS/console-$phase.log)"
    grep -q "^done:" "$RESULTS/share/phase$phase.txt" || die "boot $phase did not finish: $(cat "$RESULTS/share/phase$phase.txt")"
}

if [[ -n ${VM_LOCK:-} ]]; then # one VM run on the machine at a time: hold the lock for all three boots
    exec 9>>"$VM_LOCK"
    log "waiting for $VM_LOCK"
    flock 9
fi
for phase in 1 2 3; do
    log "boot $phase"
    boot "$phase"
    sed "s/^/  [$phase] /" "$RESULTS/share/phase$phase.txt" >&2
done
[[ -n ${VM_LOCK:-} ]] && flock -u 9

last_shutdown() { # boot 3's shutdown, from the journal in the powered-off disk image
    local j=$RESULTS/journal
    rm -rf "$j"
    mkdir -p "$j"
    debugfs -R "rdump /var/log/journal $j" "$RESULTS/root.img" >/dev/null 2>&1
    journalctl -D "$j/journal" -b 0 -o cat --no-pager >"$RESULTS/boot3-journal.txt" || return 1
    journalctl -D "$j/journal" -b 0 -u daxmode-famfs@dax1.0.service -o cat --no-pager | grep -q "Stopped\|Deactivated" &&
        ! grep -E "Failed to unmount|Failed with result|failed with result|entered failed state" "$RESULTS/boot3-journal.txt"
}
if last_shutdown; then
    echo "ok: boot 3 shut down cleanly (its journal, read from the disk image: famfs unit stopped, nothing failed)"
else
    echo "FAIL: boot 3 shut down cleanly (its journal, read from the disk image: $RESULTS/boot3-journal.txt)"
fi >"$RESULTS/share/host.txt"
cat "$RESULTS/share/host.txt" >&2
cat "$RESULTS"/share/phase*.txt "$RESULTS/share/host.txt" >"$RESULTS/results.txt"
echo "image ready after $((t_ready - t0)) s; total $(($(date +%s) - t0)) s" >>"$RESULTS/timings.txt"
cat "$RESULTS/timings.txt" >&2
if grep -q "^FAIL" "$RESULTS/results.txt"; then
    die "$(grep -c '^FAIL' "$RESULTS/results.txt") check(s) failed (results: $RESULTS/results.txt)"
fi
log "$(grep -c '^ok' "$RESULTS/results.txt") checks passed over 3 boots"
