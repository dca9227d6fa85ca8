#!/bin/bash
# A Debian root with the package's build packages, for building the .deb for another release:
#   bash qemu/deb-chroot.sh trixie            prints .cache/bootroot/trixie-build/root (built once)
#   CHROOT=$(bash qemu/deb-chroot.sh trixie) OUT=/tmp bash scripts/deb.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUITE=${1:?usage: deb-chroot.sh SUITE}
CACHE=${CACHE:-$ROOT/.cache}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# perl-openssl-defaults: lintian needs the virtual perl-openssl-abi-3, which debootstrap cannot resolve
PKGS=debhelper,dh-python,python3-all-dev,python3-setuptools,python3-click,python3-pyudev,build-essential,fakeroot,dpkg-dev,lintian,perl-openssl-defaults
dest=$CACHE/bootroot/$SUITE-build
if [[ ! -f $dest/.complete ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "deb-chroot: needs root (debootstrap)" >&2; exit 1; }
    rm -rf "$dest"
    mkdir -p "$dest"
    echo "deb-chroot: debootstrap $SUITE with $PKGS" >&2
    debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$dest/root" "$MIRROR" >"$dest/debootstrap.log" 2>&1 ||
        { tail -20 "$dest/debootstrap.log" >&2; exit 1; }
    touch "$dest/.complete"
fi
echo "$dest/root"
