#!/bin/bash
# make deb: daxmode_<version>_<arch>.deb from this checkout (committed and uncommitted files, no build
# products), with Debian's own tooling: debhelper + dh-python/pybuild (debian/), then lintian.
# Installs the build packages from the distribution's archive if they are missing (as root).
#   OUT=DIR      where the .deb goes (default: the checkout)
#   LINTIAN=0    skip lintian
#   CHROOT=DIR   build inside this Debian root instead (another release: e.g. a trixie debootstrap with
#                the build packages, which qemu/deb-chroot.sh makes); the build packages are not checked
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT}
LINTIAN=${LINTIAN:-1}
log() { echo "deb: $*" >&2; }
die() { echo "deb: $*" >&2; exit 1; }

IN=()
if [[ -n ${CHROOT:-} ]]; then
    [[ -x $CHROOT/usr/bin/dpkg-buildpackage ]] || die "$CHROOT has no dpkg-buildpackage (qemu/deb-chroot.sh makes one)"
    IN=(chroot "$CHROOT")
fi
NEED=(debhelper dh-python python3-all-dev python3-setuptools python3-click python3-pyudev
      build-essential fakeroot dpkg-dev)
[[ $LINTIAN == 1 ]] && NEED+=(lintian)
missing=()
for p in "${NEED[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && [[ -z ${CHROOT:-} ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing build packages: ${missing[*]} (apt-get install them, or run as root)"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$ROOT/pyproject.toml")
deb_version=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
[[ $version == "$deb_version" ]] ||
    die "pyproject.toml says $version, debian/changelog $deb_version: add a changelog entry (dch -v $version)"

work=${CHROOT:+$CHROOT}/build/deb
[[ -n ${CHROOT:-} ]] || work=$ROOT/build/deb
src=$work/daxmode-$version
inside=${work#"${CHROOT:-}"}
rm -rf "$work"
mkdir -p "$src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$ROOT" && xargs -0 cp --parents -t "$src" -- 2>/dev/null || true)
[[ -f $src/debian/rules && -f $src/daxmode/__init__.py ]] || die "copying the checkout to $src failed"
log "building daxmode $version in $src"
"${IN[@]}" sh -c "cd '$inside/daxmode-$version' && dpkg-buildpackage -us -uc -b" >"$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    die "dpkg-buildpackage failed (log: $work/build.log)"
}
arch=$("${IN[@]}" dpkg-architecture -qDEB_HOST_ARCH)
deb=daxmode_${version}_${arch}.deb
cp "$work/$deb" "$OUT/"
if [[ $LINTIAN == 1 ]]; then
    log "lintian --pedantic (any warning or error fails the build)"
    "${IN[@]}" lintian --pedantic --fail-on error,warning --info "$inside/daxmode_${version}_${arch}.changes" >&2
fi
echo "$OUT/$deb"
