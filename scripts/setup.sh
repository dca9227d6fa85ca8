#!/usr/bin/env bash
# Prepare a fresh Debian bookworm machine (root, no manual steps) for daxmode's tests:
#   - the Python venv (.venv, `pip install -e .[test]`);
#   - host packages the QEMU harness needs (QEMU >= 8.1 from bookworm-backports only when the one found
#     is older, busybox-static for the guest initramfs, kmod for depmod, ndctl/daxctl 76.1 for the
#     benchmark comparison, udev so guests get a udevd, ...);
#   - Debian's Linux 7.3.4 guest kernel, fetched with `apt-get download` through a PRIVATE sources list
#     and state dir (trixie is never added to the host's apt sources) and unpacked with `dpkg -x` into
#     .cache/kernels/<version>/ -- nothing is installed on the host.
# Idempotent: every step checks first and is skipped when already done.
#   scripts/setup.sh              everything
#   scripts/setup.sh --venv-only  only the venv
#   scripts/setup.sh --kernel-deps  only the packages a kernel build needs (qemu/kernel-build-deps.txt);
#                                   the kernel make targets run it, so a fresh machine builds without a manual step
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${CACHE:-$ROOT/.cache}"
KVER="${KVER:-7.3.4+deb13-amd64}"
KSUITE="${KSUITE:-trixie-backports}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
QEMU_MIN="8.1"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

make_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    # The editable install's metadata (entry point, requirements, extras) is written from pyproject.toml
    # at install time: a stamp of that file tells when it is stale (a requirement moved to an extra
    # still showed as a requirement to importlib.metadata).
    local stamp="$VENV/.daxmode-pyproject.sha256" want
    want="compat-$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if ! "$VENV/bin/python" -c 'import daxmode, pytest, click, pyudev, pyroute2, hypothesis' 2>/dev/null \
        || [[ ! -x "$VENV/bin/daxmode" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        log "installing daxmode[test] into $VENV"
        # compat mode: the project directory on sys.path through a .pth line.  The default editable
        # mode installs an import hook that every Python process of the venv imports at start-up
        # (pathlib, re, fnmatch, importlib.util: 14-17 ms of a 25 ms `python -c pass` here, ~0.3 s
        # in a TCG guest), which a wheel install never pays.
        "$VENV/bin/pip" install -q -e "$ROOT[test]" --config-settings editable_mode=compat
        echo "$want" >"$stamp"
    else
        log "venv ready ($VENV)"
    fi
    # Byte-compile the project once: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
    # daxmode process would otherwise compile its modules from source, tripling its start-up.
    "$VENV/bin/python" -m compileall -q "$ROOT/daxmode" >/dev/null
}

if [[ "${1:-}" == "--venv-only" ]]; then
    make_venv
    exit 0
fi

# The kernel-build packages of qemu/kernel-build-deps.txt whose probe (a command or an absolute path) is
# missing; build-kernel.sh checks the same list, so the two cannot disagree about what a build needs.
# Nothing missing: nothing to do, as any user; something missing: apt-get, which needs root.
if [[ "${1:-}" == "--kernel-deps" ]]; then
    missing=()
    while read -r pkg probe _; do
        [[ -z "$pkg" || "$pkg" == \#* ]] && continue
        if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
    done <"$ROOT/qemu/kernel-build-deps.txt"
    if ((${#missing[@]} == 0)); then
        log "kernel build packages present"
        exit 0
    fi
    [[ $(id -u) -eq 0 ]] || die "kernel build packages missing: ${missing[*]}; run as root, or: apt-get install ${missing[*]}"
    log "installing kernel build packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q install --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "the full setup installs host packages: run it as root (or use --venv-only)"
command -v apt-get >/dev/null || die "apt-get not found: the full setup supports Debian (bookworm) hosts only"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -y -q)
APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get "${APT_OPTS[@]}" update >/dev/null
        APT_UPDATED=1
    fi
}

# Version of the qemu-system-x86_64 on PATH as "MAJOR.MINOR", or empty when there is none.
qemu_version() {
    command -v qemu-system-x86_64 >/dev/null || return 0
    qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]\+\.[0-9]\+\).*/\1/p'
}

version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" == "$2" ]]; }

install_host_packages() {
    # busybox-static: the guest initramfs; kmod: depmod for the unpacked module tree; cpio/xz/zstd: building
    # the initramfs and reading .ko.xz; ndctl: ndctl/daxctl/cxl 76.1 (nvdimm namespaces in guests, and the
    # daxctl side of the benchmark); udev: systemd-udevd inside guests (their root is this host's root);
    # file: kernel identification in error messages; iproute2: guest network checks; socat: attaching to a
    # guest console socket (--keep).
    local want=(busybox-static kmod cpio xz-utils zstd ndctl daxctl udev file iproute2 socat ca-certificates)
    local missing=()
    local p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt_update_once
        log "installing ${missing[*]}"
        apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
    else
        log "host packages present"
    fi
}

install_qemu() {
    local v
    v="$(qemu_version)"
    if [[ -n "$v" ]] && version_ge "$v" "$QEMU_MIN"; then
        log "QEMU $v found (>= $QEMU_MIN)"
        return
    fi
    # bookworm's own QEMU 7.2 lacks volatile CXL memdevs and CXL event interrupts (kernel >= 6.3 never
    # creates mem0 with it: measured here), so take it from bookworm-backports (10.0.x).
    log "QEMU ${v:-absent} is older than $QEMU_MIN: installing qemu-system-x86 from bookworm-backports"
    local list=/etc/apt/sources.list.d/bookworm-backports.list
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb $MIRROR bookworm-backports main" >"$list"
        APT_UPDATED=0
    fi
    apt_update_once
    apt-get "${APT_OPTS[@]}" install --no-install-recommends -t bookworm-backports \
        qemu-system-x86 qemu-utils ipxe-qemu seabios >/dev/null
    v="$(qemu_version)"
    [[ -n "$v" ]] && version_ge "$v" "$QEMU_MIN" || die "QEMU is still ${v:-absent} after installing from backports"
    log "QEMU $v installed"
}

# Debian's 7.3.4 kernel for the guests, fetched without touching the host's apt configuration.
fetch_kernel() {
    local dest="$CACHE/kernels/$KVER"
    local mods="$dest/usr/lib/modules/$KVER"
    if [[ -f "$mods/vmlinuz" && -f "$mods/modules.dep" && -f "$dest/.complete" ]]; then
        log "kernel $KVER cached in $dest"
        return
    fi
    local apt_dir="$CACHE/apt-$KSUITE"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
    # Private sources list + state: the host's apt never learns about trixie.
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $KSUITE main" >"$apt_dir/sources.list"
    local opts=(
        -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
        -o "Dir::Cache::pkgcache=$apt_dir/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt_dir/srcpkgcache.bin"
        -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -q
    )
    local pkgs=("linux-image-$KVER" "linux-binary-$KVER" "linux-modules-$KVER")
    local have=1 p
    for p in "${pkgs[@]}"; do compgen -G "$apt_dir/debs/${p}_*.deb" >/dev/null || have=0; done
    if [[ $have -eq 0 ]]; then
        log "fetching ${pkgs[*]} from $KSUITE (private apt state in $apt_dir)"
        apt-get "${opts[@]}" update >/dev/null
        (cd "$apt_dir/debs" && apt-get "${opts[@]}" download "${pkgs[@]}" >/dev/null)
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    for p in "${pkgs[@]}"; do
        dpkg -x "$(compgen -G "$apt_dir/debs/${p}_*.deb" | head -1)" "$dest"
    done
    # The vmlinuz may sit in boot/ or in the module dir depending on packaging; keep one known path.
    if [[ ! -f "$mods/vmlinuz" ]]; then
        local vz
        vz="$(compgen -G "$dest/boot/vmlinuz-$KVER" || true)"
        [[ -n "$vz" ]] || die "no vmlinuz found in the $KVER packages"
        cp "$vz" "$mods/vmlinuz"
    fi
    # Debian generates modules.dep at install time (postinst); depmod it here since nothing is installed.
    # depmod -b looks in <base>/lib/modules, so give the usr-merged tree that path.
    [[ -e "$dest/lib" ]] || ln -s usr/lib "$dest/lib"
    depmod -b "$dest" "$KVER"
    touch "$dest/.complete"
    log "kernel $KVER unpacked into $dest"
}

# daxctl 85 (famfs mode) from Debian sid, the peer the benchmark and parity tests measure against: the
# .debs are fetched through a PRIVATE sources list and apt state (sid is never added to the host's apt
# sources) and unpacked with `dpkg -x` into .cache/daxctl-85/; nothing is installed. It runs through
# sid's own loader: <dir>/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path
# <dir>/usr/lib/x86_64-linux-gnu <dir>/usr/bin/daxctl (bench/guest_modes.py, test_daxctl_parity.py).
fetch_daxctl85() {
    local dest="$CACHE/daxctl-85" want="${DAXCTL_VERSION:-85}"
    local lib="$dest/usr/lib/x86_64-linux-gnu"
    if [[ -f "$dest/.complete" ]] \
        && "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$dest/usr/bin/daxctl" --version >/dev/null 2>&1; then
        log "daxctl $(cat "$dest/.complete") cached in $dest"
        return
    fi
    local apt_dir="$CACHE/apt-sid"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" >"$apt_dir/sources.list"
    local opts=(
        -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
        -o "Dir::Cache::pkgcache=$apt_dir/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt_dir/srcpkgcache.bin"
        -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Architecture=amd64"
        -o "APT::Sandbox::User=root" -q
    )
    local pkgs=(daxctl libdaxctl1 libndctl6 libcxl1 libiniparser4 libc6 libkmod2 libuuid1 libjson-c5 libudev1)
    log "fetching daxctl $want and its libraries from sid (private apt state in $apt_dir)"
    apt-get "${opts[@]}" update >/dev/null
    local ver
    ver="$(apt-cache "${opts[@]}" show daxctl 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)"
    [[ -n "$ver" ]] || die "sid has no daxctl package"
    version_ge "${ver%%-*}" "$want" || die "sid has daxctl $ver, older than $want (no famfs mode)"
    [[ "${ver%%-*}" == "$want" ]] || log "note: sid has moved on to daxctl $ver; using it"
    rm -f "$apt_dir/debs/"*.deb
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" download "${pkgs[@]}" >/dev/null)
    rm -rf "$dest"
    mkdir -p "$dest"
    local p
    for p in "${pkgs[@]}"; do
        dpkg -x "$(compgen -G "$apt_dir/debs/${p}_*.deb" | head -1)" "$dest"
    done
    "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$dest/usr/bin/daxctl" --version >/dev/null \
        || die "the unpacked daxctl $ver does not run through sid's loader"
    echo "$ver" >"$dest/.complete"
    log "daxctl $ver unpacked into $dest"
}

check_modules_visible() {
    # The harness builds its initramfs from these; fail here rather than at boot.
    local mods="$CACHE/kernels/$KVER/usr/lib/modules/$KVER"
    local m
    for m in 9p 9pnet_virtio fsdev_dax device_dax kmem dax_cxl; do
        modinfo -b "$CACHE/kernels/$KVER" -k "$KVER" "$m" >/dev/null 2>&1 \
            || die "module $m missing from $mods"
    done
}

make_venv
install_host_packages
install_qemu
fetch_kernel
check_modules_visible
fetch_daxctl85
log "done: QEMU $(qemu_version), kernel $CACHE/kernels/$KVER"
