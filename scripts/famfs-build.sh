#!/usr/bin/env bash
# Build famfs's user space (famfs, mkfs.famfs, famfs_fused, pcq) offline from a checkout the user fetched.
#
#   scripts/famfs-build.sh FAMFS_SRC OUT
#
# FAMFS_SRC is a checkout of github.com/cxl-micron-reskit/famfs with its "outlaw subrepos" in place
# (libfuse = jagalactic/libfuse branch famfs, mongoose, C-Thread-Pool; docs/famfs-tools.md says where
# each comes from). Nothing of famfs is kept in this repository: this script drives famfs's own
# CMakeLists.txt unchanged, with two offline substitutes:
#  - googletest: famfs's configure step clones google/googletest release-1.12.1; Debian's `googletest`
#    package ships that release's source in /usr/src/googletest, served to git through url.insteadOf;
#  - libdaxctl: Debian's 76.1 lacks daxctl_dev_enable_famfs(); ndctl 85's (LIBDAXCTL_DIR, or the
#    build `make setup` keeps in .cache/ndctl-85) is linked when present, else a one-function object
#    answering -EOPNOTSUPP (famfs then cannot switch a device to famfs mode itself).
# RelWithDebInfo: famfs's Debug type pulls its coverage cmake-modules into the test directory.
# Only the targets the tools and the smoke tests need are built (the `all` target would also clone
# multichase).
set -euo pipefail

src=${1:?usage: famfs-build.sh FAMFS_SRC OUT}
out=${2:?usage: famfs-build.sh FAMFS_SRC OUT}
src=$(cd "$src" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

die() { echo "daxmode: famfs-build: $*" >&2; exit 2; }
[[ -f $src/src/famfs_cli.c && -f $src/CMakeLists.txt ]] || die "$src is not a famfs checkout (no src/famfs_cli.c)"
for sub in libfuse/meson.build mongoose/mongoose.c C-Thread-Pool/thpool.c; do
	[[ -f $src/$sub ]] || die "$src/$sub missing: put famfs's subrepos in place (docs/famfs-tools.md)"
done
[[ -f /usr/src/googletest/CMakeLists.txt ]] || die "Debian package googletest is not installed"
for pc in libdaxctl libcurl yaml-0.1 uuid zlib libsystemd; do
	pkg-config --exists "$pc" || die "pkg-config finds no $pc (apt-get install libdaxctl-dev libcurl4-openssl-dev libyaml-dev uuid-dev zlib1g-dev libsystemd-dev)"
done

# libfuse fork: famfs_fused links $out/libfuse/lib/libfuse3.so (famfs's CMakeLists.txt names that path).
if [[ ! -f $out/libfuse/lib/libfuse3.so ]]; then
	meson setup -Dexamples=false -Dutils=false -Dtests=false "$out/libfuse" "$src/libfuse" >"$out/meson-setup.log" 2>&1 ||
		meson setup -Dexamples=false "$out/libfuse" "$src/libfuse" >"$out/meson-setup.log" 2>&1 ||
		die "meson setup of libfuse failed (see $out/meson-setup.log)"
	meson compile -C "$out/libfuse" >"$out/meson-compile.log" 2>&1 || die "libfuse build failed (see $out/meson-compile.log)"
fi

# googletest release-1.12.1 as a local git repository, for the clone famfs's configure runs.
gtest=$out/googletest.git
if [[ ! -d $gtest/.git ]]; then
	rm -rf "$gtest"
	cp -r /usr/src/googletest "$gtest"
	git -C "$gtest" init -q
	git -C "$gtest" add -A
	git -C "$gtest" -c user.name=daxmode -c user.email=daxmode@localhost commit -qm "Debian googletest source"
	git -C "$gtest" tag release-1.12.1
fi
export GIT_CONFIG_COUNT=1
export GIT_CONFIG_KEY_0="url.file://$gtest.insteadOf"
export GIT_CONFIG_VALUE_0=https://github.com/google/googletest.git

# libdaxctl with famfs mode (ndctl >= 85: daxctl_dev_enable_famfs): LIBDAXCTL_DIR, or the one
# `make setup` builds in .cache/ndctl-85; famfs's tools then switch a device to famfs mode themselves.
# Without it, a one-function stub answers -EOPNOTSUPP, and famfs's --set-daxmode fails (famfs then
# leaves the device unbound: seen in a guest, famfs issue #131).
here=$(cd "$(dirname "$0")/.." && pwd)
daxlib=${LIBDAXCTL_DIR:-$here/.cache/ndctl-85/build/daxctl/lib}
if [[ -e $daxlib/libdaxctl.so && $(nm -D "$daxlib/libdaxctl.so" 2>/dev/null) == *" T daxctl_dev_enable_famfs"* ]]; then
	ldflags="-L$daxlib -Wl,-rpath,$daxlib"
	echo "famfs-build: libdaxctl with famfs mode from $daxlib"
else
	stub=$out/daxctl-enable-famfs.o
	if [[ ! -f $stub ]]; then
		printf '%s\n' '#include <errno.h>' 'struct daxctl_dev;' \
			'/* famfs-patched libdaxctl only; Debian 76.1 has no fsdev mode switch. */' \
			'int daxctl_dev_enable_famfs(struct daxctl_dev *dev) { (void)dev; return -EOPNOTSUPP; }' \
			>"$out/daxctl-enable-famfs.c"
		cc -c -O2 -o "$stub" "$out/daxctl-enable-famfs.c"
	fi
	ldflags=$stub
	echo "famfs-build: no libdaxctl with famfs mode (set LIBDAXCTL_DIR); famfs cannot switch modes itself"
fi

cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
	-DCMAKE_C_FLAGS="-Wno-implicit-function-declaration" >"$out/cmake-configure.log" 2>&1 ||
	die "cmake configure failed (see $out/cmake-configure.log)"
cmake --build "$out" --target famfs mkfs.famfs famfs_fused pcq -j "${JOBS:-2}" >"$out/cmake-build.log" 2>&1 ||
	die "build failed (see $out/cmake-build.log)"
for bin in famfs mkfs.famfs famfs_fused pcq; do
	[[ -x $out/$bin ]] || die "$out/$bin was not built"
done
echo "famfs user space built in $out: famfs mkfs.famfs famfs_fused pcq ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown))"
